"""Transcript export (admin review downloads)."""

from __future__ import annotations

from typing import Any

from chat.models import Conversation
from chat.selectors import message_list


def as_dict(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.pk),
        "title": conversation.title,
        "owner": conversation.owner.get_username(),
        "model": conversation.model_name,
        "system_prompt": conversation.system_prompt,
        "options": conversation.options,
        "created_at": conversation.created_at.isoformat(),
        "updated_at": conversation.updated_at.isoformat(),
        "messages": [
            {
                "id": str(m.pk),
                "position": m.position,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "feedback": m.feedback,
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "ttft_ms": m.ttft_ms,
                "tokens_per_second": m.tokens_per_second,
                "model": m.model_name,
                "created_at": m.created_at.isoformat(),
            }
            for m in message_list(conversation=conversation)
        ],
    }


def as_markdown(conversation: Conversation) -> str:
    data = as_dict(conversation)
    lines = [
        f"# {data['title'] or 'Untitled conversation'}",
        "",
        f"- id: `{data['id']}`",
        f"- owner: {data['owner']}",
        f"- created: {data['created_at']}",
        f"- last activity: {data['updated_at']}",
    ]
    if data["system_prompt"]:
        lines += ["", "## system prompt", "", data["system_prompt"]]
    for m in data["messages"]:
        extra = [] if m["status"] == "complete" else [m["status"]]
        if m["feedback"]:
            extra.append("👍" if m["feedback"] > 0 else "👎")
        suffix = f" ({', '.join(extra)})" if extra else ""
        lines += ["", f"## {m['position']}. {m['role']}{suffix}", "", m["content"]]
    return "\n".join(lines) + "\n"
