"""Markdown to safe HTML for message text, which is untrusted (user input and model output).

Three layers, each enough on its own for the common attacks, so one mistake is not a hole:

1. markdown-it-py with ``html=False``: raw HTML in the source comes out as escaped text, and
   only http, https and mailto links are recognised (anything else stays literal text).
2. Our own render rules emit only a few known tags and classes: highlighted code with classes,
   never inline styles (the Content-Security-Policy forbids them); images become links.
3. nh3 (ammonia) re-parses the result against an explicit allow-list of tags, attributes,
   classes and URL schemes, and sets ``rel``/``target`` on every link.

``python -m chat.rendering`` prints ``static/css/highlight.css``, the token colours for the
classes the highlighter emits (a test checks the file is current and readable).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, gettext
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml, unescapeAll
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_all_lexers, get_lexer_by_name
from pygments.styles import get_style_by_name
from pygments.token import STANDARD_TYPES, Text
from pygments.util import ClassNotFound

MAX_MARKDOWN_CHARS = 200_000  # longer text is shown escaped, unparsed, to bound CPU
MAX_HIGHLIGHT_CHARS = 20_000  # longer code blocks skip Pygments (its regexes are not linear)
MAX_CACHED_CHARS = 10_000  # longer text is not cached: an entry is up to ~6x its text in memory
MAX_NESTING = 20  # markdown-it's CommonMark default; deeper block content would be dropped
MAX_LABEL_CHARS = 32
REPLACEMENT_CHARACTER = "\ufffd"

# Chat replies sit under the page's own h1/h2, so their headings start at h3.
HEADING_SHIFT = {"h1": "h3", "h2": "h4", "h3": "h5", "h4": "h6", "h5": "h6", "h6": "h6"}

ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
_ALLOWED_URL = re.compile(r"(?:https?|mailto):", re.IGNORECASE)

ALLOWED_TAGS = frozenset(
    {"p", "br", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li"}
    | {"h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "hr"}
    | {"a", "span", "div", "button"}
)
# ``class`` is not listed here: nh3 filters it through ALLOWED_CLASSES instead (it refuses both).
# ``rel`` and ``target`` are not listed either: the cleaner sets them on every link itself.
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "ol": {"start"},
    "button": {"type", "data-copy", "aria-label"},
}
LINK_REL = "noopener noreferrer nofollow"
_ALIGN_CLASSES = {"align-left", "align-center", "align-right"}
ALLOWED_CLASSES: dict[str, set[str]] = {
    "div": {"code-block", "code-head"},
    "span": {"code-lang"} | {cls for cls in STANDARD_TYPES.values() if cls},
    "code": {f"language-{aliases[0]}" for _, aliases, _, _ in get_all_lexers() if aliases},
    "button": {"copy-code"},
    "th": _ALIGN_CLASSES,
    "td": _ALIGN_CLASSES,
}

_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes=ALLOWED_ATTRIBUTES,
    allowed_classes=ALLOWED_CLASSES,
    link_rel=LINK_REL,
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=set(ALLOWED_SCHEMES),
    url_relative="deny",
    strip_comments=True,
)
_FORMATTER = HtmlFormatter(nowrap=True)  # bare <span class="k"> runs; we write the wrapper


class _ChatMarkdown(MarkdownIt):
    """markdown-it whose links (and images) must use an allowed scheme, or stay literal text.

    The URL arrives entity-decoded and percent-encoded, so ``java&#x09;script:`` is seen as
    ``java%09script:`` and rejected like any other unknown scheme.
    """

    def validateLink(self, url: str) -> bool:  # noqa: N802 (markdown-it's name)
        return _ALLOWED_URL.match(url) is not None


def _render_fence(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: Any
) -> str:
    token = tokens[idx]
    info = unescapeAll(token.info).strip()
    return _code_block(token.content, info.split(maxsplit=1)[0] if info else "")


def _render_code_block(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: Any
) -> str:
    """Indented code gets the same frame and copy button as fenced code, without a language."""
    return _code_block(tokens[idx].content, "")


def _render_image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: Any
) -> str:
    """A link to the image instead of the image: remote images track readers and CSP blocks
    them. Inside a link (a linked badge) only the alt text, since links cannot nest."""
    token = tokens[idx]
    alt = escapeHtml(self.renderInlineAsText(token.children or [], options, env))
    if token.meta.get("in_link"):
        return alt
    src = escapeHtml(str(token.attrs.get("src", "")))
    return f'<a href="{src}">{alt or src}</a>'


def _code_block(code: str, lang: str) -> str:
    lexer = _lexer(lang.lower()) if lang else None
    if lexer is not None and len(code) <= MAX_HIGHLIGHT_CHARS:
        body = highlight(code, lexer, _FORMATTER)
    else:
        body = escapeHtml(code)
    code_class = f' class="language-{lexer.aliases[0]}"' if lexer is not None else ""
    label = escapeHtml(lang[:MAX_LABEL_CHARS])
    copy, copy_code = escape(gettext("Copy")), escape(gettext("Copy code"))
    return (
        '<div class="code-block"><div class="code-head">'
        f'<span class="code-lang">{label}</span>'
        f'<button type="button" class="copy-code" data-copy aria-label="{copy_code}">'
        f"{copy}</button></div><pre><code{code_class}>{body}</code></pre></div>\n"
    )


@functools.lru_cache(maxsize=256)
def _lexer(name: str) -> Lexer | None:
    try:
        return get_lexer_by_name(name, stripnl=False)  # keep leading blank lines as written
    except ClassNotFound:
        return None


def _build_markdown() -> MarkdownIt:
    md = _ChatMarkdown("commonmark", {"html": False, "breaks": True, "linkify": False})
    md.enable(["table", "strikethrough"])
    md.options["maxNesting"] = MAX_NESTING
    md.add_render_rule("fence", _render_fence)
    md.add_render_rule("code_block", _render_code_block)
    md.add_render_rule("image", _render_image)
    return md


_MD = _build_markdown()


def _adjust_tokens(tokens: list[Token]) -> None:
    """Shift headings down, turn table alignment styles into classes, mark images in links."""
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = HEADING_SHIFT[token.tag]
        elif token.type in ("th_open", "td_open"):
            style = token.attrs.pop("style", None)
            if isinstance(style, str) and style.startswith("text-align:"):
                token.attrSet("class", "align-" + style.removeprefix("text-align:"))
        elif token.type == "inline" and token.children:
            link_depth = 0
            for child in token.children:
                if child.type == "link_open":
                    link_depth += 1
                elif child.type == "link_close":
                    link_depth -= 1
                elif child.type == "image":
                    child.meta["in_link"] = link_depth > 0


def _plain(text: str) -> str:
    """Escaped text in one paragraph; NUL becomes U+FFFD as markdown-it would make it."""
    return f"<p>{escape(text.replace(chr(0), REPLACEMENT_CHARACTER))}</p>"


def _render(text: str) -> str:
    if len(text) > MAX_MARKDOWN_CHARS:
        return _plain(text)
    env: dict[str, Any] = {}
    tokens = _MD.parse(text, env)
    if any(token.level >= MAX_NESTING - 1 for token in tokens):
        # markdown-it silently drops block content past its nesting limit: show it all instead.
        return _plain(text)
    _adjust_tokens(tokens)
    return _CLEANER.clean(_MD.renderer.render(tokens, _MD.options, env))


@functools.lru_cache(maxsize=4096)
def _render_cached(text: str, language: str | None) -> str:
    """Keyed on the language too: the copy button's label is translated."""
    return _render(text)


def render_markdown(text: str) -> SafeString:
    """Render untrusted Markdown to sanitized HTML that is safe to put in a page as is."""
    if len(text) > MAX_CACHED_CHARS:
        return mark_safe(_render(text))
    return mark_safe(_render_cached(text, get_language()))


# --- highlight.css -------------------------------------------------------------------------

# Theme name -> (Pygments style, text colour where the style leaves plain text uncoloured).
CODE_THEMES: dict[str, tuple[str, str]] = {
    "light": ("default", "#1b1d29"),
    "dark": ("github-dark", "#e6edf3"),
    "stellar": ("night-owl", "#d6deeb"),
}
MIN_CONTRAST = 4.5  # WCAG AA for normal-size text
_HEX = r"#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?\b"
_COLOR = re.compile(rf"(?<![-\w])color: ({_HEX})")
_BACKGROUND = re.compile(rf"background-color: ({_HEX})")


def _hex6(color: str) -> str:
    """``#BBB`` -> ``#bbbbbb``: Pygments writes short colours as it found them."""
    color = color.lower()
    return "#" + "".join(c * 2 for c in color[1:]) if len(color) == 4 else color


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""

    def luminance(color: str) -> float:
        channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _readable(color: str, background: str) -> str:
    """The colour nudged towards black or white, in small steps, until it passes WCAG AA."""
    target = "#000000" if contrast_ratio(background, "#000000") > 4.5 else "#ffffff"
    pairs = [(int(color[i : i + 2], 16), int(target[i : i + 2], 16)) for i in (1, 3, 5)]
    for step in range(101):
        mixed = "#" + "".join(f"{round(a + (b - a) * step / 100):02x}" for a, b in pairs)
        if contrast_ratio(mixed, background) >= MIN_CONTRAST:
            return mixed
    return target


def _theme_css(style_name: str, fallback_text: str, selectors: list[str]) -> str:
    style = get_style_by_name(style_name)
    background = _hex6(style.background_color)
    text = "#" + (style.style_for_token(Text)["color"] or fallback_text.lstrip("#"))
    text = _readable(_hex6(text), background)
    frame = ", ".join(f"{sel}, {sel} pre" for sel in selectors)
    lines = [f"{frame} {{ background-color: {background}; color: {text} }}"]
    for line in HtmlFormatter(style=style_name).get_token_style_defs(selectors):
        bg_match = _BACKGROUND.search(line)
        token_bg = _hex6(bg_match.group(1)) if bg_match else background
        lines.append(
            _COLOR.sub(lambda m, bg=token_bg: f"color: {_readable(_hex6(m.group(1)), bg)}", line)
        )
    return "\n".join(lines)


def highlight_css() -> str:
    """The stylesheet for highlighted code in every theme; colours below AA are nudged."""

    def block(theme: str, selectors: list[str]) -> str:
        style_name, fallback = CODE_THEMES[theme]
        return f"/* {theme}: Pygments '{style_name}' */\n" + _theme_css(
            style_name, fallback, [f"{sel} .code-block" for sel in selectors]
        )

    dark_default = block("dark", ["html:not([data-theme])"]).replace("\n", "\n  ")
    return "\n\n".join(
        [
            "/* Generated by `python -m chat.rendering > static/css/highlight.css`. */",
            block("light", ['html[data-theme="light"]', "html:not([data-theme])"]),
            block("dark", ['html[data-theme="dark"]']),
            block("stellar", ['html[data-theme="stellar"]']),
            f"@media (prefers-color-scheme: dark) {{\n  {dark_default}\n}}\n",
        ]
    )


if __name__ == "__main__":
    print(highlight_css(), end="")
