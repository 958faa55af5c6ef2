"""Settings → Import with realistic files of each format, written by hand from the public
descriptions of the formats (tests/portability/files/): ChatGPT's branching mapping with an
edit, a regenerated reply, tool calls, hidden reasoning, images and voice; Open WebUI's
history tree and its older flat list; our own export by hand and through the real exporter.
Each goes through the real upload form and the import task; importing again adds nothing."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from chat import services
from chat.models import Conversation, Message, Vote
from portability import importers
from portability.importers import common
from portability.models import ImportItem, ImportJob
from tests import factories
from tests.portability import support
from tests.portability.support import import_file, thread_of

pytestmark = pytest.mark.django_db

LISBON = "chatgpt:6650e3c2-1b7a-8000-9f4e-3c1d2b7a9e01"
VOICE = "chatgpt:65920a60-0000-4000-8000-00000000b0b0"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def test_it_imports_the_branch_chatgpt_last_showed(owner: Any, owner_client: Client) -> None:
    job = import_file(
        owner_client, owner, "conversations.json", support.fixture("chatgpt_conversations.json")
    )
    assert (job.status, job.format, job.total, job.imported, job.skipped) == (
        "done",
        "chatgpt",
        3,
        2,
        1,
    )
    assert job.skip_counts == {"empty": 1} and job.reasons == [
        {"code": "empty", "title": "New chat"}
    ]

    lisbon = Conversation.objects.get(owner=owner, import_source=LISBON)
    # The edited question and the regenerated answer (the siblings last seen), no system or
    # tool node, no call to the browser, no hidden reasoning; the image is noted.
    assert thread_of(lisbon) == [
        ("user", "Plan three days in Lisbon for me, please."),
        ("assistant", "Day 1: Alfama and the castle.\nDay 2: Belém.\nDay 3: Sintra."),
        ("user", "[image omitted]\n\nWhere should I eat near this square? Vegetarian, please."),
        ("assistant", "Try **Ao 26** or *Princesa do Castelo* — both vegetarian."),
        ("assistant", "Tram 28 costs €3 on board; a Viva Viagem card is cheaper."),
        ("user", "Show it as code, quickly"),
        ("assistant", '```python\nfares = {"on_board": 3.0, "card": 1.85}\n```'),
    ]
    assert lisbon.title == "Trip to Lisbon" and lisbon.model_name == "gpt-4o"
    assert lisbon.created_at == at(1717236000) and lisbon.updated_at == at(1717236900.5)
    assert not lisbon.archived and lisbon.source == "chat"
    messages = list(lisbon.messages.order_by("position"))
    assert [m.position for m in messages] == list(range(7)) and lisbon.next_position == 7
    assert messages[0].created_at == at(1717236001) and messages[-1].created_at == at(1717236405)
    assert {m.model_name for m in messages if m.role == "assistant"} == {"gpt-4o"}
    assert {m.model_name for m in messages if m.role == "user"} == {""}
    assert all(m.status == "complete" and not m.superseded for m in messages)

    voice = Conversation.objects.get(owner=owner, import_source=VOICE)
    # No current_node: the newest leaf; custom instructions and the empty last turn left out.
    assert thread_of(voice) == [
        ("user", "Como se diz 'good morning'?\n\n[audio omitted]"),
        ("assistant", "Diz-se 'bom dia'."),
    ]
    assert voice.archived and voice.messages.get(role="assistant").model_name == "gpt-4o-audio"
    assert not ImportItem.objects.exists()  # nothing of the file is left waiting


def test_the_zip_chatgpt_sends_gives_the_same(owner: Any, owner_client: Client) -> None:
    job = import_file(owner_client, owner, "chatgpt-export.zip", support.chatgpt_zip())
    assert (job.format, job.imported, job.skipped) == ("chatgpt", 2, 1)
    assert Conversation.objects.filter(owner=owner).count() == 2


def test_the_format_comes_from_the_content_not_the_name(owner: Any, owner_client: Client) -> None:
    chatgpt = import_file(
        owner_client, owner, "notes.txt", support.fixture("chatgpt_conversations.json")
    )
    openwebui = import_file(
        owner_client, owner, "conversations.json", support.fixture("openwebui_chats.json")
    )
    assert (chatgpt.format, openwebui.format) == ("chatgpt", "openwebui")


def test_it_imports_open_webui_chats(owner: Any, owner_client: Client) -> None:
    job = import_file(
        owner_client, owner, "chat-export.json", support.fixture("openwebui_chats.json")
    )
    assert (job.format, job.total, job.imported, job.skipped) == ("openwebui", 2, 2, 0)

    bread = Conversation.objects.get(owner=owner, import_source__endswith="7a6b5c4d3e2f")
    assert bread.import_source == "openwebui:8d2f1c7e-5a4b-4c3d-9e8f-7a6b5c4d3e2f"
    # From currentId back to the root: the regenerated answer, not the first one.
    assert thread_of(bread) == [
        ("user", "My starter smells like nail polish. Is it dead?"),
        ("assistant", "No — that acetone smell means it is **hungry**. Feed it twice a day."),
        ("user", "Here is a photo after feeding.\n\n[image omitted]"),
        ("assistant", "Lovely bubbles: it is ready to bake with."),
    ]
    assert bread.system_prompt == "You are a patient baking teacher."
    assert bread.options == {"temperature": 0.6, "top_k": 40, "max_new_tokens": 400}
    assert bread.pinned and not bread.archived and bread.model_name == "llama3.1:8b"
    assert bread.created_at == at(1718000000) and bread.updated_at == at(1718003610)
    assert bread.messages.order_by("position").last().created_at == at(1718003610)

    haiku = Conversation.objects.get(owner=owner, title="Haiku")
    assert thread_of(haiku) == [
        ("user", "A haiku about rain, please"),
        ("assistant", "Soft rain on tin roofs"),
    ]
    assert haiku.system_prompt == "Answer in verse." and haiku.archived
    reply = haiku.messages.get(role="assistant")
    assert (reply.status, reply.model_name) == ("cancelled", "mistral:7b")  # done: false


def test_it_imports_our_own_export_written_by_hand(owner: Any, owner_client: Client) -> None:
    job = import_file(
        owner_client, owner, "conversations.json", support.fixture("stellarchat_export.json")
    )
    assert (job.format, job.imported, job.skipped) == ("stellarchat", 2, 0)
    document = support.fixture_json("stellarchat_export.json")
    for record in document["conversations"]:
        c = Conversation.objects.get(owner=owner, import_source=f"stellarchat:{record['id']}")
        assert_same_conversation(c, record)
    regex = Conversation.objects.get(owner=owner, title="Regex help ✓")
    assert regex.messages.get(position=7).status == "cancelled"  # "streaming" when exported
    assert Conversation.objects.get(owner=owner, title="").source == "api"


def assert_same_conversation(c: Conversation, record: dict[str, Any]) -> None:
    """``c`` holds what ``record`` (one conversation of our format) says, ids apart."""
    assert c.pk != record["id"]
    assert (c.title, c.model_name, c.system_prompt, c.options) == (
        record["title"],
        record["model"],
        record["system_prompt"],
        record["options"],
    )
    assert (c.pinned, c.archived, c.source) == (
        record["pinned"],
        record["archived"],
        record["source"],
    )
    assert c.created_at == datetime.fromisoformat(record["created_at"])
    assert c.updated_at == datetime.fromisoformat(record["updated_at"])
    messages = list(c.messages.order_by("position"))
    new_id = {m["id"]: str(n.pk) for m, n in zip(record["messages"], messages, strict=True)}
    groups: dict[str, str] = {}
    for m, n in zip(record["messages"], messages, strict=True):
        assert str(n.pk) != m["id"]
        assert (n.position, n.role, n.content, n.model_name, n.feedback) == (
            m["position"],
            m["role"],
            m["content"],
            m["model"],
            m["feedback"],
        )
        assert n.status == ("cancelled" if m["status"] == "streaming" else m["status"])
        assert n.created_at == datetime.fromisoformat(m["created_at"])
        assert n.superseded == m["superseded"]
        assert (str(n.replaces_id) if n.replaces_id else None) == (
            new_id[m["replaces"]] if m["replaces"] else None
        )
        if m["group"]:
            assert groups.setdefault(m["group"], str(n.group)) == str(n.group)
            assert str(n.group) != m["group"]  # votes' groups are unique server-wide
        else:
            assert n.group is None
        assert n.slot == m["slot"]
        for name in ("prompt_tokens", "completion_tokens", "ttft_ms", "tokens_per_second"):
            assert getattr(n, name) == m[name], name
    assert c.next_position == max(m["position"] for m in record["messages"]) + 1
    votes = list(Vote.objects.filter(conversation=c).order_by("created_at"))
    assert [
        {
            "group": groups[v["group"]],
            "outcome": v["outcome"],
            "winner": new_id[v["winner"]] if v["winner"] else None,
            "arena": v["arena"],
            "created_at": datetime.fromisoformat(v["created_at"]),
        }
        for v in record["votes"]
    ] == [
        {
            "group": str(v.group),
            "outcome": v.outcome,
            "winner": str(v.winner_id) if v.winner_id else None,
            "arena": v.arena,
            "created_at": v.created_at,
        }
        for v in votes
    ]
    assert all(v.voter_id == c.owner_id for v in votes)


def rich_history(owner: Any) -> None:
    """A person's data with everything the export carries: versions (a regenerated reply and
    an edited question), feedback, counts, a compare group with its vote, flags, options."""
    c = factories.make_conversation(
        owner, title="Versions", system_prompt="Be brief.", options={"temperature": 0.2}
    )
    question, first = services.reply_request(
        conversation=c, content="Héllo 世界 🚀", model_name="m"
    )
    services.reply_finish(
        message_id=first.pk,
        content="first",
        status="complete",
        prompt_tokens=5,
        completion_tokens=3,
    )
    services.message_set_feedback(message=first, feedback=-1)
    _, second = services.reply_regenerate(conversation=c, model_name="m")
    services.reply_finish(message_id=second.pk, content="second", status="complete")
    _, third = services.reply_edit(
        conversation=c, message_id=question.pk, content="edited", model_name="m"
    )
    services.reply_finish(message_id=third.pk, content="partial", status="cancelled")
    c = factories.make_conversation(owner, title="Compare")
    _, replies = services.reply_compare(
        conversation=c, content="which?", model_names=["model-a", "model-b"]
    )
    for reply, text in zip(replies, ("a says", "b says"), strict=True):
        services.reply_finish(message_id=reply.pk, content=text, status="complete")
    services.vote_record(
        conversation=c, group=replies[0].group, winner=str(replies[1].pk), voter=owner
    )
    c = factories.make_conversation(owner, title="Flags", turns=2)
    services.conversation_set_flags(conversation=c, pinned=True, archived=True)


def test_our_export_round_trips_into_an_empty_account(owner: Any, owner_client: Client) -> None:
    from portability.export import export_zip

    rich_history(owner)
    data = b"".join(export_zip(owner))
    document = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("conversations.json"))
    newcomer = factories.make_user("newcomer")
    client = Client()
    client.force_login(newcomer)

    job = import_file(client, newcomer, "stellarchat-owner.zip", data)

    assert (job.format, job.imported, job.skipped) == ("stellarchat", 3, 0)
    for record in document["conversations"]:
        c = Conversation.objects.get(owner=newcomer, import_source=f"stellarchat:{record['id']}")
        assert_same_conversation(c, record)
    # And back out: the newcomer's export says what the owner's said, ids and times apart.
    again = json.loads(
        zipfile.ZipFile(io.BytesIO(b"".join(export_zip(newcomer)))).read("conversations.json")
    )
    assert [strip(c) for c in again["conversations"]] == [
        strip(c) for c in document["conversations"]
    ]


def strip(conversation: dict[str, Any]) -> dict[str, Any]:
    """A conversation of our format without what an import renews (ids and groups)."""
    positions = {m["id"]: m["position"] for m in conversation["messages"]}
    groups: dict[str, list[int]] = {}
    for m in conversation["messages"]:
        if m["group"]:
            groups.setdefault(m["group"], []).append(m["slot"])
    return {
        **{k: v for k, v in conversation.items() if k not in ("id", "messages", "votes")},
        "messages": [
            {
                **{k: v for k, v in m.items() if k not in ("id", "replaces", "group")},
                "replaces": positions.get(m["replaces"]),
                "in_group": m["group"] is not None,
            }
            for m in conversation["messages"]
        ],
        "votes": [
            {
                **{k: value for k, value in vote.items() if k not in ("group", "winner")},
                "winner": positions.get(vote["winner"]),
                "slots": groups.get(vote["group"]),
            }
            for vote in conversation["votes"]
        ],
    }


@pytest.mark.parametrize(
    ("name", "kind", "count"),
    [
        ("chatgpt_conversations.json", "chatgpt", 2),
        ("openwebui_chats.json", "openwebui", 2),
        ("stellarchat_export.json", "stellarchat", 2),
    ],
)
def test_importing_the_same_file_again_adds_nothing(
    name: str, kind: str, count: int, owner: Any, owner_client: Client
) -> None:
    first = import_file(owner_client, owner, name, support.fixture(name))
    before = (Conversation.objects.count(), Message.objects.count(), Vote.objects.count())
    again = import_file(owner_client, owner, name, support.fixture(name))

    assert first.imported == count and again.imported == 0
    assert again.skip_counts.get("already_imported") == count
    assert (Conversation.objects.count(), Message.objects.count(), Vote.objects.count()) == before
    assert f"imported 0 conversations; {again.skipped} skipped: " in support_summary(again)


def support_summary(job: ImportJob) -> str:
    from portability.import_selectors import import_job_summary

    return import_job_summary(job)


def test_our_export_into_the_same_account_is_already_there(
    owner: Any, owner_client: Client
) -> None:
    from portability.export import export_zip

    factories.make_conversation(owner, title="Mine", turns=1)
    job = import_file(owner_client, owner, "mine.zip", b"".join(export_zip(owner)))
    assert (job.imported, job.skip_counts) == (0, {"already_imported": 1})
    assert Conversation.objects.filter(owner=owner).count() == 1


def test_someone_elses_import_does_not_count_as_mine(
    owner: Any, owner_client: Client, other_client: Client, other_user: Any
) -> None:
    import_file(other_client, other_user, "c.json", support.fixture("chatgpt_conversations.json"))
    job = import_file(owner_client, owner, "c.json", support.fixture("chatgpt_conversations.json"))
    assert job.imported == 2
    assert Conversation.objects.filter(import_source=LISBON).count() == 2


def test_the_summary_names_why_conversations_were_skipped(owner: Any, owner_client: Client) -> None:
    import_file(owner_client, owner, "c.json", support.fixture("chatgpt_conversations.json"))
    job = import_file(owner_client, owner, "c.json", support.fixture("chatgpt_conversations.json"))
    page = owner_client.get(f"{support.PAGE}{job.pk}/").content.decode()
    assert (
        "imported 0 conversations; 3 skipped: already imported (2), nothing to import in it (1)"
        in page
    )
    assert "“Trip to Lisbon”: already imported" in page


def test_long_texts_are_cut_with_a_note(owner: Any, owner_client: Client, settings: Any) -> None:
    settings.STELLARCHAT_MAX_MESSAGE_CHARS = 100
    chats = support.fixture_json("openwebui_chats.json")
    chats[0]["title"] = "T" * 500
    chats[0]["chat"]["history"]["messages"]["m1"]["content"] = "x" * 250
    import_file(owner_client, owner, "c.json", json.dumps(chats).encode())
    c = Conversation.objects.get(owner=owner, pinned=True)
    assert c.title == "T" * 200
    first = c.messages.get(position=0).content
    assert first == "x" * 100 + "\n\n[150 characters cut on import]"


def test_a_conversation_too_long_is_skipped_and_named(
    owner: Any, owner_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "MAX_MESSAGES", 3)
    job = import_file(owner_client, owner, "c.json", support.fixture("openwebui_chats.json"))
    assert (job.imported, job.skip_counts) == (1, {"too_many_messages": 1})
    assert job.reasons == [{"code": "too_many_messages", "title": "Sourdough starter"}]


def test_text_the_database_cannot_hold_is_cleaned(owner: Any, owner_client: Client) -> None:
    chats = support.fixture_json("openwebui_chats.json")[:1]
    chats[0]["title"] = "nul\u0000 title"
    chats[0]["chat"]["history"]["messages"]["m1"]["content"] = "a\u0000b \ud800 c"
    data = json.dumps(chats).encode()  # \u0000 and a lone surrogate, escaped as JSON allows
    import_file(owner_client, owner, "c.json", data)
    c = Conversation.objects.get(owner=owner)
    assert c.title == "nul title"
    assert c.messages.get(position=0).content in ("ab ? c", "ab \ufffd c")


def test_unknown_options_and_bad_values_are_left_out() -> None:
    assert common.clean_options(
        {"temperature": 9, "top_p": 0.5, "seed": "x", "mirostat": 1, "stop": ["END"]}
    ) == {"top_p": 0.5, "stop": ["END"]}


def test_times_in_every_shape_the_formats_use() -> None:
    assert common.parse_time(1717236000) == "2024-06-01T10:00:00+00:00"
    assert common.parse_time(1717236000123) == "2024-06-01T10:00:00.123000+00:00"  # ms
    assert common.parse_time("2024-06-01T10:00:00Z") == "2024-06-01T10:00:00Z"
    assert common.parse_time("2024-06-01T10:00:00") == "2024-06-01T10:00:00+00:00"
    for bad in (None, True, "soon", float("nan"), -5, 10**30, "9999-01-01T00:00:00+00:00"):
        assert common.parse_time(bad) is None


def test_prepare_touches_no_database(django_assert_num_queries: Any) -> None:
    """The upload's heavy part runs off the shared thread: it must not need the database."""
    with django_assert_num_queries(0):
        prepared = importers.prepare(
            io.BytesIO(support.fixture("chatgpt_conversations.json")), filename="c.json"
        )
    assert (prepared.total, prepared.count, prepared.skips) == (3, 2, [("empty", "New chat")])
    prepared.close()


def test_a_file_with_nothing_to_import_ends_at_once(owner: Any, owner_client: Client) -> None:
    chats = support.fixture_json("chatgpt_conversations.json")[2:]  # the empty one
    job = import_file(owner_client, owner, "c.json", json.dumps(chats).encode())
    assert (job.status, job.total, job.skipped, job.task_id) == ("done", 1, 1, "")
    assert ImportJob.objects.get(pk=job.pk).finished_at is not None
