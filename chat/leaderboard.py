"""The models' leaderboard: Bradley–Terry ratings on the Elo scale, fitted on the people's votes.

The math (battles from a vote, the fit, the bootstrap, the chart's geometry) is plain Python with
no Django in it; ``leaderboard`` at the end reads the votes and replies from the database.

A vote on a compare or arena group becomes battles between its replies' models: the winner beats
each other reply; a tie or "both bad" is a tie for every pair (half a win each). The ratings are
fitted on pair counts summed over all votes, so the same votes in any order give the same table;
the 95 % interval is a bootstrap over the votes in a canonical order with a fixed seed.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

ELO_SCALE = 400 / math.log(10)  # natural-log strength -> Elo points
ELO_CENTRE = 1000.0
DEFAULT_PRIOR = 1.0
DEFAULT_RESAMPLES = 200
DEFAULT_SEED = 20261207
TTFT_WINDOW = 10_000  # TTFT p50 over a model's most recent replies that have one

# A reply that failed, or is still streaming, takes no part in a battle.
_OUT_OF_BATTLE = frozenset({"failed", "streaming"})

# (model a, model b, score of a) with a < b: 1 a won, 0 b won, 0.5 tie.
Battle = tuple[str, str, float]


def parse_day(value: str) -> date:
    """A YYYY-MM-DD date, or ValueError saying what was expected."""
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{value!r} is not a date in the form YYYY-MM-DD") from None


def _battle(winner: str, loser: str, score: float) -> Battle:
    return (winner, loser, score) if winner < loser else (loser, winner, 1.0 - score)


def battles_from_vote(
    *, outcome: str, winner_id: Any, replies: Iterable[tuple[Any, str, str]]
) -> list[Battle]:
    """The battles one vote decides. ``replies``: (id, model name, status) of the group's
    assistant replies. Failed and streaming replies are left out, and so are pairs of one model
    (a model cannot gain or lose against itself)."""
    ok = sorted(
        ((str(pk), model) for pk, model, status in replies if status not in _OUT_OF_BATTLE),
        key=lambda r: r[0],
    )
    if outcome == "win":
        winner = next((model for pk, model in ok if pk == str(winner_id)), None)
        if winner is None:  # the winner failed, or is not in the group
            return []
        return sorted(
            _battle(winner, model, 1.0)
            for pk, model in ok
            if pk != str(winner_id) and model != winner
        )
    if outcome in ("tie", "both_bad"):
        return sorted(
            _battle(a, b, 0.5) for i, (_, a) in enumerate(ok) for _, b in ok[i + 1 :] if a != b
        )
    return []


@dataclass
class PairCounts:
    """Games and the first model's score per unordered pair (a < b)."""

    games: dict[tuple[str, str], float] = field(default_factory=dict)
    score: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, battles: Iterable[Battle], times: int = 1) -> None:
        for a, b, s in battles:
            self.games[a, b] = self.games.get((a, b), 0.0) + times
            self.score[a, b] = self.score.get((a, b), 0.0) + s * times

    def models(self) -> list[str]:
        return sorted({m for pair in self.games for m in pair})


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the Hessians here are small and dense)."""
    n = len(vector)
    rows = [row[:] + [vector[i]] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-300:
            raise ValueError(
                "the ratings are not identified by these battles (a model won or lost all of "
                "them, or some models never met the others): use a prior"
            )
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            if factor:
                for c in range(col, n + 1):
                    rows[r][c] -= factor * rows[col][c]
    out = [0.0] * n
    for r in range(n - 1, -1, -1):
        total = rows[r][n] - sum(rows[r][c] * out[c] for c in range(r + 1, n))
        out[r] = total / rows[r][r]
    return out


def fit_bradley_terry(
    counts: PairCounts,
    models: Sequence[str] | None = None,
    *,
    prior: float = DEFAULT_PRIOR,
    start: dict[str, float] | None = None,
) -> dict[str, float]:
    """Maximum a-posteriori Bradley–Terry strengths (natural log) by Newton's method.

    ``prior``: pseudo-games each model plays against a virtual player of strength 0, scored a
    tie, so a model with only wins (or only losses) keeps a finite rating. With ``prior=0`` the
    plain maximum-likelihood fit, which needs every model to have won and lost somewhere (a
    strongly connected comparison graph); ValueError otherwise. Deterministic: the result
    depends only on the counts, not on the order the battles came in.
    """
    names = sorted(models if models is not None else counts.models())
    if not names:
        return {}
    index = {m: i for i, m in enumerate(names)}
    pairs = [
        (index[a], index[b], g, counts.score[a, b])
        for (a, b), g in sorted(counts.games.items())
        if a in index and b in index and g > 0
    ]
    # Without a prior the ratings are defined up to a constant: pin the last one at 0.
    free = len(names) if prior > 0 else len(names) - 1
    theta = [0.0] * len(names)
    if start:
        theta = [start.get(m, 0.0) for m in names]
        if prior <= 0:
            theta = [t - theta[-1] for t in theta]

    def objective(th: list[float]) -> float:
        total = 0.0
        for i, j, g, s in pairs:
            d = th[i] - th[j]
            total += s * _log_sigmoid(d) + (g - s) * _log_sigmoid(-d)
        if prior > 0:
            total += sum(prior / 2 * (_log_sigmoid(t) + _log_sigmoid(-t)) for t in th)
        return total

    current = objective(theta)
    for _ in range(200):
        grad = [0.0] * len(names)
        hess = [[0.0] * len(names) for _ in names]
        for i, j, g, s in pairs:
            p = _sigmoid(theta[i] - theta[j])
            grad[i] += s - g * p
            grad[j] -= s - g * p
            w = g * p * (1 - p)
            hess[i][i] += w
            hess[j][j] += w
            hess[i][j] -= w
            hess[j][i] -= w
        if prior > 0:
            for i, t in enumerate(theta):
                p = _sigmoid(t)
                grad[i] += prior * (0.5 - p)
                hess[i][i] += prior * p * (1 - p)
        # hess holds the negated Hessian (positive semi-definite): step = hess^-1 grad.
        step = _solve([row[:free] for row in hess[:free]], grad[:free]) + [0.0] * (
            len(names) - free
        )
        scale = 1.0
        while True:  # step halving keeps every iteration an ascent
            trial = [t + scale * d for t, d in zip(theta, step, strict=True)]
            value = objective(trial)
            if value >= current - 1e-12 or scale < 1e-6:
                break
            scale /= 2
        theta, current = trial, value
        if max((abs(d) * scale for d in step), default=0.0) < 1e-10:
            break
        if max(abs(t) for t in theta) > 50:  # e^50: someone never lost, and no prior holds it
            raise ValueError("no finite rating: a model won (or lost) every battle; use a prior")
    return dict(zip(names, theta, strict=True))


def to_elo(strengths: dict[str, float]) -> dict[str, float]:
    """Elo points, centred so that the models' mean is 1000."""
    if not strengths:
        return {}
    mean = sum(strengths.values()) / len(strengths)
    return {m: ELO_CENTRE + ELO_SCALE * (t - mean) for m, t in strengths.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Rating:
    rating: float
    ci_low: float | None
    ci_high: float | None


def rate(
    votes: Iterable[tuple[str, Sequence[Battle]]],
    *,
    prior: float = DEFAULT_PRIOR,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Rating]:
    """Ratings (Elo scale) with a 95 % bootstrap interval from ``votes``: (canonical key, e.g.
    the group id, and the battles that vote decided). Order-independent: the votes are sorted by
    their key before resampling, and the resampling draws from a fixed seed."""
    ordered = sorted((key, tuple(sorted(b))) for key, b in votes if b)
    counts = PairCounts()
    for _, battles in ordered:
        counts.add(battles)
    models = counts.models()
    if not models:
        return {}
    strengths = fit_bradley_terry(counts, models, prior=prior)
    elo = to_elo(strengths)
    samples: dict[str, list[float]] = {m: [] for m in models}
    # Many votes decide the same battles: resample the vote's kind, then count each kind once.
    kinds = sorted({battles for _, battles in ordered})
    position = {k: i for i, k in enumerate(kinds)}
    kind_of = [position[b] for _, b in ordered]
    rng = random.Random(seed)
    for _ in range(resamples):
        drawn = Counter(rng.choices(kind_of, k=len(kind_of)))
        sample = PairCounts()
        for kind, times in sorted(drawn.items()):
            sample.add(kinds[kind], times)
        try:
            fitted = fit_bradley_terry(sample, models, prior=prior, start=strengths)
        except ValueError:  # without a prior, a resample can leave a model unbeaten
            continue
        for m, value in to_elo(fitted).items():
            samples[m].append(value)
    return {
        m: Rating(
            rating=elo[m],
            ci_low=percentile(samples[m], 2.5) if samples[m] else None,
            ci_high=percentile(samples[m], 97.5) if samples[m] else None,
        )
        for m in models
    }


@dataclass
class Row:
    """One model's line of the leaderboard."""

    model: str
    rating: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    battles: int = 0
    wins: int = 0
    ties: int = 0
    losses: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    tokens_per_second: float | None = None
    ttft_p50_ms: float | None = None
    replies: int = 0
    failed: int = 0

    @property
    def failure_rate(self) -> float | None:
        """Failed replies among those that ended (complete, cancelled or failed)."""
        return self.failed / self.replies if self.replies else None

    @property
    def failure_percent(self) -> float | None:
        rate = self.failure_rate
        return None if rate is None else 100 * rate

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failure_rate": self.failure_rate}


def tally(votes: Iterable[tuple[str, Sequence[Battle]]]) -> dict[str, Row]:
    """Battles, wins, ties and losses per model."""
    rows: dict[str, Row] = {}
    for _, battles in votes:
        for a, b, score in battles:
            for model, mine in ((a, score), (b, 1.0 - score)):
                row = rows.setdefault(model, Row(model=model))
                row.battles += 1
                if mine == 1.0:
                    row.wins += 1
                elif mine == 0.0:
                    row.losses += 1
                else:
                    row.ties += 1
    return rows


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    """Best rating first; models without battles after, by name."""
    return sorted(
        rows,
        key=lambda r: (r.rating is None, -(r.rating or 0.0), r.model),
    )


@dataclass(frozen=True)
class ChartBar:
    model: str
    y: float
    x: float
    x_low: float
    x_high: float
    rating: float
    ci_low: float
    ci_high: float

    @property
    def text_y(self) -> float:
        return self.y + 4


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    bars: list[ChartBar]
    ticks: list[tuple[float, int]]  # (x, Elo)

    @property
    def label_x(self) -> int:
        return self.left - 8

    @property
    def axis_bottom(self) -> int:
        return self.height - 6


def chart(rows: Sequence[Row], *, width: int = 720, left: int = 180, row_height: int = 26) -> Chart:
    """Where each rated model's point and interval go in a horizontal SVG chart."""
    rated = [r for r in rows if r.rating is not None]
    right = width - 20
    lows = [r.ci_low if r.ci_low is not None else r.rating for r in rated]
    highs = [r.ci_high if r.ci_high is not None else r.rating for r in rated]
    lo = min(lows, default=ELO_CENTRE - 50)
    hi = max(highs, default=ELO_CENTRE + 50)
    step = next((s for s in (10, 25, 50, 100, 200, 500) if (hi - lo) / s <= 8), 1000)
    lo = math.floor((lo - 1) / step) * step
    hi = math.ceil((hi + 1) / step) * step

    def x(value: float) -> float:
        return round(left + (right - left) * (value - lo) / (hi - lo), 1)

    bars = []
    for i, (r, low, high) in enumerate(zip(rated, lows, highs, strict=True)):
        assert r.rating is not None
        bars.append(
            ChartBar(
                model=r.model,
                y=30 + i * row_height,
                x=x(r.rating),
                x_low=x(low),
                x_high=x(high),
                rating=r.rating,
                ci_low=low,
                ci_high=high,
            )
        )
    ticks = [(x(v), int(v)) for v in range(int(lo), int(hi) + 1, step)]
    return Chart(
        width=width,
        height=30 + len(bars) * row_height + 10,
        left=left,
        right=right,
        bars=bars,
        ticks=ticks,
    )


# --- reading the database ------------------------------------------------------------------


def leaderboard(
    *,
    since: date | None = None,
    until: date | None = None,
    arena_only: bool = False,
    prior: float = DEFAULT_PRIOR,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> list[Row]:
    """The leaderboard over the votes cast, and the replies made, from ``since`` to ``until``
    (whole days, both included, in the current time zone). ``arena_only``: blind battles only
    (the replies' own figures stay over all replies)."""
    from django.db.models import Avg, Count, Q

    from chat.models import Message, Vote

    votes = Vote.objects.all()
    replies = Message.objects.filter(role=Message.Role.ASSISTANT).exclude(model_name="")
    votes = votes.filter(**day_range("created_at", since, until))
    replies = replies.filter(**day_range("created_at", since, until))
    if arena_only:
        votes = votes.filter(arena=True)

    group_replies: dict[str, list[tuple[Any, str, str]]] = {}
    in_groups = (
        Message.objects.filter(role=Message.Role.ASSISTANT, group__in=votes.values("group"))
        .values_list("group", "id", "model_name", "status")
        .order_by()
    )
    for group, pk, model, status in in_groups.iterator(chunk_size=5000):
        group_replies.setdefault(str(group), []).append((pk, model, status))
    decided = [
        (
            str(group),
            battles_from_vote(
                outcome=outcome, winner_id=winner_id, replies=group_replies.get(str(group), [])
            ),
        )
        for group, outcome, winner_id in votes.values_list("group", "outcome", "winner_id")
        .order_by()
        .iterator(chunk_size=5000)
    ]
    rows = tally(decided)
    for model, rating in rate(decided, prior=prior, resamples=resamples, seed=seed).items():
        row = rows[model]
        row.rating, row.ci_low, row.ci_high = rating.rating, rating.ci_low, rating.ci_high

    ended = [Message.Status.COMPLETE, Message.Status.CANCELLED, Message.Status.FAILED]
    stats = (
        replies.values("model_name")
        .order_by("model_name")
        .annotate(
            up=Count("id", filter=Q(group__isnull=True, feedback=1)),
            down=Count("id", filter=Q(group__isnull=True, feedback=-1)),
            speed=Avg("tokens_per_second"),
            ended=Count("id", filter=Q(status__in=ended)),
            failed=Count("id", filter=Q(status=Message.Status.FAILED)),
        )
    )
    for s in stats:
        row = rows.setdefault(s["model_name"], Row(model=s["model_name"]))
        row.thumbs_up, row.thumbs_down = s["up"], s["down"]
        row.tokens_per_second = s["speed"]
        row.replies, row.failed = s["ended"], s["failed"]
        ttfts = list(
            replies.filter(model_name=row.model, ttft_ms__isnull=False)
            .order_by("-created_at")
            .values_list("ttft_ms", flat=True)[:TTFT_WINDOW]
        )
        row.ttft_p50_ms = percentile(ttfts, 50) if ttfts else None
    return sort_rows(rows.values())


def day_range(field_name: str, since: date | None, until: date | None) -> dict[str, Any]:
    """Filters for whole days in the current time zone, both ends included."""
    from datetime import time, timedelta

    from django.utils import timezone

    tz = timezone.get_current_timezone()
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds[f"{field_name}__gte"] = datetime.combine(since, time.min, tzinfo=tz)
    if until is not None:
        bounds[f"{field_name}__lt"] = datetime.combine(
            until + timedelta(days=1), time.min, tzinfo=tz
        )
    return bounds
