"""The models' leaderboard: Bradley–Terry on the Elo scale from the votes, its filters, the admin
page and ``manage.py leaderboard``."""

from __future__ import annotations

import io
import json
import math
import random
import uuid
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from chat import leaderboard as lb
from chat.models import Conversation, Message, Vote
from tests import factories

PAGE = "/admin/chat/vote/leaderboard/"


# --- the math, without a database ---------------------------------------------------------


def test_three_wins_in_four_is_190_8_elo_apart() -> None:
    """By hand: P(A beats B) = 3/4 = 1 / (1 + 10^(-d/400)) gives d = 400·log10(3) ≈ 190.85,
    and the two ratings sit symmetrically about 1000."""
    votes = [(f"v{i}", [("A", "B", 1.0)]) for i in range(3)] + [("v3", [("A", "B", 0.0)])]
    ratings = lb.rate(votes, prior=0, resamples=0)
    assert ratings["A"].rating - ratings["B"].rating == pytest.approx(400 * math.log10(3))
    assert ratings["A"].rating == pytest.approx(1095.42, abs=0.01)
    assert ratings["B"].rating == pytest.approx(904.58, abs=0.01)
    assert ratings["A"].ci_low is None  # no resamples, no interval


def test_a_tie_counts_half_a_win() -> None:
    """One win and two ties in three is a score of 2 out of 3: d = 400·log10(2) ≈ 120.4."""
    votes = [("v0", [("A", "B", 1.0)]), ("v1", [("A", "B", 0.5)]), ("v2", [("A", "B", 0.5)])]
    ratings = lb.rate(votes, prior=0, resamples=0)
    assert ratings["A"].rating - ratings["B"].rating == pytest.approx(400 * math.log10(2))


def test_the_prior_keeps_an_undefeated_model_finite() -> None:
    votes = [(f"v{i}", [("A", "B", 1.0)]) for i in range(5)]
    ratings = lb.rate(votes, prior=1.0, resamples=20)
    assert 1000 < ratings["A"].rating < 1400
    assert ratings["B"].rating == pytest.approx(2000 - ratings["A"].rating)
    with pytest.raises(ValueError, match="prior"):
        lb.rate(votes, prior=0, resamples=0)


def test_the_same_votes_in_any_order_give_the_same_table() -> None:
    rng = random.Random(7)
    models = ["alpha", "beta", "gamma", "delta"]
    votes = []
    for i in range(300):
        a, b = sorted(rng.sample(models, 2))
        votes.append((f"{i:04d}", [(a, b, rng.choice([0.0, 0.5, 1.0, 1.0]))]))
    first = lb.rate(votes, resamples=50)
    for _ in range(3):
        rng.shuffle(votes)
        assert lb.rate(votes, resamples=50) == first  # exactly, intervals included
    assert all(r.ci_low < r.rating < r.ci_high for r in first.values())
    assert sum(r.rating for r in first.values()) / 4 == pytest.approx(1000)


def _replies(*rows: tuple[str, str]) -> list[tuple[str, str, str]]:
    return [(f"id{i}", model, status) for i, (model, status) in enumerate(rows)]


def test_a_three_way_win_is_two_battles() -> None:
    replies = _replies(("a", "complete"), ("b", "complete"), ("c", "cancelled"))
    battles = lb.battles_from_vote(outcome="win", winner_id="id1", replies=replies)
    assert battles == [("a", "b", 0.0), ("b", "c", 1.0)]
    ties = lb.battles_from_vote(outcome="both_bad", winner_id=None, replies=replies)
    assert ties == [("a", "b", 0.5), ("a", "c", 0.5), ("b", "c", 0.5)]


def test_failed_replies_and_same_model_pairs_are_left_out() -> None:
    replies = _replies(("a", "complete"), ("b", "failed"), ("a", "complete"), ("c", "streaming"))
    assert lb.battles_from_vote(outcome="win", winner_id="id0", replies=replies) == []
    assert lb.battles_from_vote(outcome="tie", winner_id=None, replies=replies) == []
    failed_winner = _replies(("a", "failed"), ("b", "complete"))
    assert lb.battles_from_vote(outcome="win", winner_id="id0", replies=failed_winner) == []


def test_parse_day_says_what_it_expects() -> None:
    assert lb.parse_day("2026-12-01") == date(2026, 12, 1)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        lb.parse_day("01/12/2026")


def test_the_chart_places_points_inside_their_intervals() -> None:
    rows = [
        lb.Row(model="a", rating=1100, ci_low=1050, ci_high=1150),
        lb.Row(model="b", rating=900, ci_low=850, ci_high=950),
        lb.Row(model="c"),
    ]
    chart = lb.chart(rows)
    assert [b.model for b in chart.bars] == ["a", "b"]
    for bar in chart.bars:
        assert chart.left <= bar.x_low < bar.x < bar.x_high <= chart.right
    assert chart.bars[0].x > chart.bars[1].x


# --- from the database --------------------------------------------------------------------


def _group(conversation: Conversation, *models: str, statuses: dict[int, str] | None = None):
    """A user turn, then one reply per model sharing a new group id."""
    factories.make_message(conversation, content="which is better?")
    group = uuid.uuid4()
    replies = []
    for slot, model in enumerate(models):
        status = (statuses or {}).get(slot, "complete")
        reply = factories.make_message(
            conversation,
            role="assistant",
            content=f"{model} says hi",
            model_name=model,
            status=status,
        )
        Message.objects.filter(pk=reply.pk).update(group=group, slot=slot)
        reply.group, reply.slot = group, slot
        replies.append(reply)
    return group, replies


def _vote(
    conversation: Conversation,
    group: uuid.UUID,
    outcome: str,
    winner: Message | None = None,
    *,
    arena: bool = False,
    when: datetime | None = None,
) -> Vote:
    vote = Vote.objects.create(
        conversation=conversation,
        group=group,
        voter=conversation.owner,
        outcome=outcome,
        winner=winner,
        arena=arena,
    )
    if when is not None:
        Vote.objects.filter(pk=vote.pk).update(created_at=when)
    return vote


@pytest.fixture
def arena(owner: Any) -> dict[str, Any]:
    """alpha beats beta three times in four (one of them blind, a week ago); a three-way tie;
    a few single replies of each model with thumbs and timings; gamma never battles."""
    chat = factories.make_conversation(owner, title="Arena")
    week_ago = timezone.now() - timedelta(days=7)
    for i in range(4):
        group, (a, b) = _group(chat, "alpha", "beta")
        winner = a if i < 3 else b
        _vote(chat, group, "win", winner, arena=i == 0, when=week_ago if i == 0 else None)
    group, _ = _group(chat, "alpha", "beta", "delta", statuses={2: "failed"})
    _vote(chat, group, "tie")
    for model, feedback, tps, ttft, status in [
        ("alpha", 1, 30.0, 100.0, "complete"),
        ("alpha", -1, 10.0, 300.0, "complete"),
        ("alpha", 1, None, 200.0, "failed"),
        ("gamma", 1, 5.0, 50.0, "complete"),
    ]:
        factories.make_message(chat, content="hello")
        reply = factories.make_message(
            chat, role="assistant", content="hi", model_name=model, status=status, feedback=feedback
        )
        Message.objects.filter(pk=reply.pk).update(tokens_per_second=tps, ttft_ms=ttft)
    return {"chat": chat}


@pytest.mark.django_db
def test_the_table_counts_battles_thumbs_speed_and_failures(arena: Any) -> None:
    rows = {r.model: r for r in lb.leaderboard(resamples=30)}
    assert list(rows) == ["alpha", "beta", "delta", "gamma"]
    alpha, beta = rows["alpha"], rows["beta"]
    assert (alpha.battles, alpha.wins, alpha.ties, alpha.losses) == (5, 3, 1, 1)
    assert (beta.battles, beta.wins, beta.ties, beta.losses) == (5, 1, 1, 3)
    assert alpha.rating > 1000 > beta.rating
    assert alpha.ci_low < alpha.rating < alpha.ci_high
    # The failed delta reply and its pairs are no battle; delta still shows, unrated.
    assert rows["delta"].battles == 0 and rows["delta"].rating is None
    # Thumbs only outside compare; timings and failures over every reply of the model.
    assert (alpha.thumbs_up, alpha.thumbs_down) == (2, 1)
    assert alpha.tokens_per_second == pytest.approx(20.0)
    assert alpha.ttft_p50_ms == pytest.approx(200.0)
    assert alpha.failure_rate == pytest.approx(1 / 8)  # 5 compare + 3 single replies, 1 failed
    assert rows["delta"].failure_rate == 1.0
    gamma = rows["gamma"]
    assert (gamma.rating, gamma.battles, gamma.thumbs_up, gamma.ttft_p50_ms) == (None, 0, 1, 50.0)


@pytest.mark.django_db
def test_filters_by_day_and_arena(arena: Any) -> None:
    today = timezone.localdate()
    recent = {r.model: r for r in lb.leaderboard(since=today, resamples=0)}
    assert recent["alpha"].battles == 4  # the week-old vote is out
    old = {r.model: r for r in lb.leaderboard(until=today - timedelta(days=1), resamples=0)}
    assert old["alpha"].battles == 1 and old["alpha"].wins == 1
    blind = {r.model: r for r in lb.leaderboard(arena_only=True, resamples=0)}
    assert (blind["alpha"].battles, blind["beta"].battles, blind["gamma"].battles) == (1, 1, 0)


@pytest.mark.django_db
def test_the_order_votes_were_cast_in_does_not_matter(owner: Any) -> None:
    chat = factories.make_conversation(owner)
    plan = []
    rng = random.Random(3)
    for _ in range(12):
        models = rng.sample(["a", "b", "c"], 2)
        group, replies = _group(chat, *models)
        outcome = rng.choice(["win", "win", "tie"])
        plan.append((group, outcome, rng.choice(replies) if outcome == "win" else None))

    def table() -> list[dict[str, Any]]:
        return [r.as_dict() for r in lb.leaderboard(resamples=40)]

    for group, outcome, winner in plan:
        _vote(chat, group, outcome, winner)
    first = table()
    Vote.objects.all().delete()
    for group, outcome, winner in reversed(plan):
        _vote(chat, group, outcome, winner)
    assert table() == first


# --- the admin page -----------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_see_the_table_and_the_chart(staff_client: Client, arena: Any) -> None:
    response = staff_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert (
        '<svg class="leaderboard-chart"' in html and html.count("<circle") == 2
    )  # the rated models
    assert "<script>" not in html and "style=" not in html  # the CSP allows neither inline
    for model in ("alpha", "beta", "delta", "gamma"):
        assert model in html
    rows = response.context["rows"]
    assert rows[0].model == "alpha"
    changelist = staff_client.get("/admin/chat/vote/")
    assert changelist.status_code == 200 and PAGE in changelist.content.decode()


@pytest.mark.django_db
def test_the_page_filters(staff_client: Client, arena: Any) -> None:
    today = timezone.localdate().isoformat()
    rows = staff_client.get(PAGE, {"since": today, "until": today}).context["rows"]
    assert {r.model: r.battles for r in rows}["alpha"] == 4
    rows = staff_client.get(PAGE, {"arena": "on"}).context["rows"]
    assert {r.model: r.battles for r in rows}["alpha"] == 1


@pytest.mark.django_db
def test_bad_filters_get_a_message_not_an_error(staff_client: Client, arena: Any) -> None:
    response = staff_client.get(PAGE, {"since": "last tuesday"})
    assert response.status_code == 200
    assert response.context["rows"] is None and "since" in response.context["form"].errors
    assert "Please correct the filters" in response.content.decode()
    backwards = staff_client.get(PAGE, {"since": "2026-12-02", "until": "2026-12-01"})
    assert backwards.status_code == 200 and backwards.context["form"].non_field_errors()


@pytest.mark.django_db
def test_non_staff_never_see_it(owner_client: Client, anon_client: Client) -> None:
    for client in (owner_client, anon_client):
        response = client.get(PAGE)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    clerk = factories.make_user("clerk", is_staff=True)  # staff, but no view permission
    client = Client()
    client.force_login(clerk)
    assert client.get(PAGE).status_code == 403


# --- manage.py leaderboard ----------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_prints_the_table(arena: Any) -> None:
    out = io.StringIO()
    call_command("leaderboard", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["model", "rating"]
    assert [line.split()[0] for line in lines[1:]] == ["alpha", "beta", "delta", "gamma"]
    assert "3/1/1" in lines[1] and "2/1" in lines[1]


@pytest.mark.django_db
def test_the_command_prints_json(arena: Any) -> None:
    out = io.StringIO()
    call_command("leaderboard", "--json", "--arena", stdout=out)
    rows = json.loads(out.getvalue())
    alpha = next(r for r in rows if r["model"] == "alpha")
    assert (alpha["battles"], alpha["wins"]) == (1, 1)
    assert set(alpha) >= {"rating", "ci_low", "ci_high", "ttft_p50_ms", "failure_rate"}


@pytest.mark.django_db
def test_the_command_rejects_a_bad_date() -> None:
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("leaderboard", "--since", "yesterday")
    with pytest.raises(CommandError, match="after"):
        call_command("leaderboard", "--since", "2026-12-02", "--until", "2026-12-01")
