"""Markdown rendering of untrusted text: what it renders, and that hostile input stays inert.

Inertness is checked on the parsed output (stdlib html.parser), not by substring search, so a
test fails on any executable element or attribute however it is spelled.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.template import Context, Template
from django.utils import translation
from django.utils.safestring import SafeString
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat import rendering
from chat.rendering import ALLOWED_TAGS, LINK_REL, contrast_ratio, render_markdown

FORBIDDEN_TAGS = {"script", "iframe", "svg", "style", "img", "form", "input", "object", "embed"}
SAFE_HREF = re.compile(r"(?:https?|mailto):", re.IGNORECASE)


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> _Elements:
    parser = _Elements()
    parser.feed(markup)
    parser.close()
    return parser


def inertness_problems(markup: str) -> list[str]:
    """What in this HTML could run script, load something, or escape the allow-list."""
    problems = []
    for tag, attrs in parse(markup).elements:
        if tag in FORBIDDEN_TAGS or tag not in ALLOWED_TAGS:
            problems.append(f"element <{tag}>")
        for name, value in attrs.items():
            if name.startswith("on") or name in {"style", "id", "src", "srcdoc", "formaction"}:
                problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not SAFE_HREF.match(value or ""):
                problems.append(f"href {value!r}")
        if tag == "a" and (attrs.get("rel") != LINK_REL or attrs.get("target") != "_blank"):
            problems.append(f"link without rel/target: {attrs}")
    return problems


def assert_inert(markup: str) -> None:
    assert inertness_problems(markup) == [], markup


def tags(markup: str) -> list[str]:
    return [tag for tag, _ in parse(markup).elements]


def visible_text(markup: str) -> str:
    return "".join(parse(markup).text)


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    rendering._render_cached.cache_clear()
    yield
    rendering._render_cached.cache_clear()


# --- what it renders -------------------------------------------------------------------------


def test_it_returns_a_safe_string() -> None:
    out = render_markdown("**hi**")
    assert isinstance(out, SafeString)
    assert out == "<p><strong>hi</strong></p>\n"


def test_it_shifts_headings_below_the_page_headings() -> None:
    out = render_markdown("# One\n## Two\n### Three\n#### Four\n##### Five\n###### Six")
    assert tags(out) == ["h3", "h4", "h5", "h6", "h6", "h6"]
    assert visible_text(out).split() == ["One", "Two", "Three", "Four", "Five", "Six"]


def test_it_renders_lists() -> None:
    out = render_markdown("- apple\n- pear\n\n3. third\n4. fourth\n   - nested")
    assert tags(out) == ["ul", "li", "li", "ol", "li", "li", "ul", "li"]
    assert parse(out).elements[3] == ("ol", {"start": "3"})


def test_it_renders_tables_with_alignment_as_classes() -> None:
    out = render_markdown("| l | c | r | n |\n|:--|:-:|--:|---|\n| 1 | 2 | 3 | 4 |")
    cells = [(tag, attrs) for tag, attrs in parse(out).elements if tag in {"th", "td"}]
    classes = [attrs.get("class") for _, attrs in cells]
    assert classes == ["align-left", "align-center", "align-right", None] * 2
    assert "style" not in out
    assert tags(out)[:3] == ["table", "thead", "tr"]


def test_it_renders_links_with_rel_and_target() -> None:
    out = render_markdown(
        '[docs](https://example.com/a?b=1&c=2 "The docs") <mailto:me@example.org>'
    )
    links = [attrs for tag, attrs in parse(out).elements if tag == "a"]
    assert links == [
        {
            "href": "https://example.com/a?b=1&c=2",
            "title": "The docs",
            "target": "_blank",
            "rel": "noopener noreferrer nofollow",
        },
        {
            "href": "mailto:me@example.org",
            "target": "_blank",
            "rel": "noopener noreferrer nofollow",
        },
    ]


def test_it_leaves_relative_and_schemeless_links_as_text() -> None:
    out = render_markdown("[home](/) [page](page.html) [frag](#top)")
    assert "a" not in tags(out)
    assert visible_text(out) == "[home](/) [page](page.html) [frag](#top)\n"


def test_it_turns_images_into_links() -> None:
    out = render_markdown("![a cat](https://example.com/cat.png) ![](https://example.com/x.png)")
    assert "img" not in tags(out)
    links = [(attrs["href"], text) for (_, attrs), text in zip_links(out)]
    assert links == [
        ("https://example.com/cat.png", "a cat"),
        ("https://example.com/x.png", "https://example.com/x.png"),
    ]


def test_it_keeps_only_the_alt_text_of_an_image_inside_a_link() -> None:
    out = render_markdown("[![build passing](https://ci.example/badge.svg)](https://ci.example)")
    assert [attrs["href"] for tag, attrs in parse(out).elements if tag == "a"] == [
        "https://ci.example"
    ]
    assert visible_text(out) == "build passing\n"


def zip_links(markup: str) -> list[tuple[tuple[str, dict[str, str | None]], str]]:
    """Each <a> with its text, for outputs whose links hold plain text only."""
    anchors = [(tag, attrs) for tag, attrs in parse(markup).elements if tag == "a"]
    texts = [html.unescape(t) for t in re.findall(r"<a [^>]*>(.*?)</a>", markup)]
    return list(zip(anchors, texts, strict=True))


FENCED_PYTHON = '```python\ndef greet(name):\n    return f"<hi> {name}" & 1\n```'


def test_it_highlights_fenced_code_with_classes() -> None:
    out = render_markdown(FENCED_PYTHON)
    elements = parse(out).elements
    assert elements[:5] == [
        ("div", {"class": "code-block"}),
        ("div", {"class": "code-head"}),
        ("span", {"class": "code-lang"}),
        (
            "button",
            {"type": "button", "class": "copy-code", "data-copy": "", "aria-label": "Copy code"},
        ),
        ("pre", {}),
    ]
    assert elements[5] == ("code", {"class": "language-python"})
    span_classes = {attrs.get("class") for tag, attrs in elements[6:] if tag == "span"}
    assert {"k", "nf", "sa"} <= span_classes  # keyword def, function name, f-string prefix
    assert '<span class="code-lang">python</span>' in out
    assert ">Copy</button>" in out


def test_the_copy_button_would_copy_the_code_as_written() -> None:
    out = render_markdown("\n\n" + FENCED_PYTHON.replace("```python\n", "```python\n\n"))
    pre = re.search(r"<pre>(.*)</pre>", out, re.DOTALL)
    assert pre is not None
    assert visible_text(pre.group(1)) == '\ndef greet(name):\n    return f"<hi> {name}" & 1\n'


@pytest.mark.parametrize("fence", ["```\n", "```no-such-language\n", "    "])
def test_it_shows_code_without_a_known_language_plainly(fence: str) -> None:
    source = "x = '<b>'"
    out = render_markdown(fence + source + ("\n```" if fence.startswith("```") else ""))
    assert re.search(r"<pre><code>x = '&lt;b&gt;'\n</code></pre>", out), out
    assert "language-" not in out
    assert "copy-code" in out


def test_it_translates_the_copy_button_and_caches_per_language(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rendering, "gettext", lambda s: f"{translation.get_language()}:{s}")
    with translation.override("en"):
        english = render_markdown("```\nx\n```")
    with translation.override("zh-hans"):
        chinese = render_markdown("```\nx\n```")
    assert 'aria-label="en:Copy code">en:Copy<' in english
    assert 'aria-label="zh-hans:Copy code">zh-hans:Copy<' in chinese


def test_it_renders_inline_code_escaped() -> None:
    assert render_markdown("run `rm -rf <dir>`") == "<p>run <code>rm -rf &lt;dir&gt;</code></p>\n"


def test_it_renders_blockquotes_and_strikethrough() -> None:
    out = render_markdown("> quoted ~~gone~~")
    assert out == "<blockquote>\n<p>quoted <s>gone</s></p>\n</blockquote>\n"


def test_it_turns_newlines_into_line_breaks() -> None:
    assert render_markdown("one\ntwo") == "<p>one<br>\ntwo</p>\n"


@pytest.mark.parametrize(
    "text", ["你好，世界。这是一个测试", "こんにちは 세계", "🚀✨ 👩‍💻 🇯🇵 1️⃣", "مرحبا بالعالم"]
)
def test_it_keeps_cjk_emoji_and_rtl_text_unchanged(text: str) -> None:
    assert render_markdown(text) == f"<p>{text}</p>\n"


def test_the_template_filter_renders_markdown_without_double_escaping() -> None:
    template = Template("{% load chat_extras %}<div>{{ text|markdown }}</div>")
    out = template.render(Context({"text": "<b>x</b> & **y**"}))
    assert out == "<div><p>&lt;b&gt;x&lt;/b&gt; &amp; <strong>y</strong></p>\n</div>"
    assert Template("{% load chat_extras %}{{ text|markdown }}").render(Context({})) == ""


def test_it_renders_the_same_text_from_the_cache() -> None:
    first = render_markdown(FENCED_PYTHON)
    hits = rendering._render_cached.cache_info().hits
    assert render_markdown(FENCED_PYTHON) == first
    assert rendering._render_cached.cache_info().hits == hits + 1


# --- limits ----------------------------------------------------------------------------------


def test_it_shows_oversized_text_escaped_without_parsing() -> None:
    text = "**not bold** <script>x</script>\x00" + "a" * rendering.MAX_MARKDOWN_CHARS
    out = render_markdown(text)
    assert tags(out) == ["p"]
    assert out.startswith("<p>**not bold** &lt;script&gt;x&lt;/script&gt;\ufffdaaa")


def test_it_survives_a_very_long_word() -> None:
    word = "A" * 10_000
    assert render_markdown(f"see {word} there") == f"<p>see {word} there</p>\n"


@pytest.mark.parametrize(
    "text",
    [
        ">" * 500 + " deep",
        "- " * 500 + "deep",
        "\n".join("  " * i + "- deep" for i in range(500)),
        "\n".join(">" * i + " deep" for i in range(1, 500)),
        "[" * 5000 + "deep" + "](https://x)" * 5000,
        "*" * 5000 + "deep" + "*" * 5000,
    ],
    ids=["quotes", "list-markers", "indented-lists", "quote-ladder", "brackets", "emphasis"],
)
def test_it_keeps_deeply_nested_text_without_crashing(text: str) -> None:
    out = render_markdown(text)
    assert_inert(out)
    assert "deep" in out  # markdown-it drops block content past its nesting limit; we must not


def test_it_still_renders_moderate_nesting_as_markdown() -> None:
    out = render_markdown("> > > quoted\n\n- a\n  - b\n    - c")
    assert tags(out).count("blockquote") == 3
    assert tags(out).count("ul") == 3


# --- hostile input ---------------------------------------------------------------------------

HOSTILE = {
    "script": "<script>alert(1)</script>",
    "img-onerror": "<img src=x onerror=alert(1)>",
    "svg-onload": "<svg onload=alert(1)>",
    "iframe": '<iframe src="https://evil.example"></iframe>',
    "style": "<style>body{display:none}</style>",
    "js-link": "[x](javascript:alert(1))",
    "js-link-mixed-case": "[x](JaVaScRiPt:alert(1))",
    "js-link-tab-entity": "[x](java&#x09;script:alert(1))",
    "js-link-entity": "[x](&#106;avascript:alert(1))",
    "js-link-angle": "[x](<javascript:alert(1)>)",
    "js-autolink": "<javascript:alert(1)>",
    "data-link": "[x](data:text/html;base64,PHNjcmlwdD4=)",
    "vbscript-link": "[x](vbscript:msgbox(1))",
    "file-link": "[x](file:///etc/passwd)",
    "html-anchor": '<a href="javascript:alert(1)">x</a>',
    "js-image": "![x](javascript:alert(1))",
    "data-image": "![x](data:image/png;base64,iVBORw0KGgo=)",
    "reference-js": "[x][r]\n\n[r]: javascript:alert(1)",
    "comment": "<!-- <script>alert(1)</script> -->",
    "form": '<form action="https://evil.example"><input name=q autofocus onfocus=alert(1)></form>',
    "fence-language": '```"><script>alert(1)</script>\ncode\n```',
    "fence-language-attr": "```x onmouseover=alert(1) style=color:red\ncode\n```",
    "title-quotes": '[x](https://example.com "a\\" onmouseover=\\"alert(1)")',
    "title-single-quotes": "[x](https://example.com 'a\\' onmouseover=alert(1) x=\\'')",
    "rtl-override": "[\u202egnp.exe](https://example.com/\u202efdp.exe) \u202eevil",
    "nul": "a\x00b <scr\x00ipt>alert(1)</script>",
    "table-style": "| a |\n|:-:|\n| <span style=x>b</span> |",
    "entity-script": "&lt;script&gt;alert(1)&lt;/script&gt;",
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    "object": '<object data="https://evil.example/x.swf"></object>',
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_renders_inert(text: str) -> None:
    out = render_markdown(text)
    assert_inert(out)
    assert "<!--" not in out


@pytest.mark.parametrize(
    "name",
    ["js-link", "js-link-mixed-case", "js-link-tab-entity", "js-link-entity", "js-link-angle"]
    + ["data-link", "vbscript-link", "file-link", "html-anchor", "js-image", "reference-js"],
)
def test_links_with_other_schemes_are_not_links(name: str) -> None:
    out = render_markdown(HOSTILE[name])
    assert "a" not in tags(out), out
    assert "x" in visible_text(out)


def test_raw_html_is_shown_as_text() -> None:
    out = render_markdown(HOSTILE["script"] + "\n\n" + HOSTILE["form"])
    assert visible_text(out).startswith("<script>alert(1)</script>\n<form action=")
    assert tags(out) == ["p", "p"]


def test_a_hostile_fence_language_is_only_a_label() -> None:
    out = render_markdown(HOSTILE["fence-language"])
    labels = re.findall(r'<span class="code-lang">(.*?)</span>', out)
    assert labels == ['"&gt;&lt;script&gt;alert(1)&lt;/script&gt;']
    assert "<code>code\n</code>" in out


def test_quotes_in_a_link_title_stay_inside_the_title() -> None:
    out = render_markdown(HOSTILE["title-quotes"])
    assert [attrs for tag, attrs in parse(out).elements if tag == "a"] == [
        {
            "href": "https://example.com",
            "title": 'a" onmouseover="alert(1)',
            "target": "_blank",
            "rel": LINK_REL,
        }
    ]


def test_rtl_overrides_stay_in_text_but_not_raw_in_urls() -> None:
    out = render_markdown(HOSTILE["rtl-override"])
    assert "\u202egnp.exe" in visible_text(out)
    assert [attrs["href"] for tag, attrs in parse(out).elements if tag == "a"] == [
        "https://example.com/%E2%80%AEfdp.exe"
    ]


def test_nul_characters_become_replacement_characters() -> None:
    out = render_markdown(HOSTILE["nul"])
    assert "\x00" not in out
    assert out.count("\ufffd") == 2


def test_nothing_outside_the_allow_list_survives_the_sanitizer() -> None:
    dirty = (
        '<p id="x" style="color:red" onclick="alert(1)" class="code-block">hi</p>'
        '<a href="javascript:alert(1)" rel="opener" target="_top" class="evil">a</a>'
        '<a href="/relative">b</a><span class="k fixed-overlay">c</span><img src="x">'
        '<button type="submit" formaction="https://evil.example" class="copy-code x">d</button>'
    )
    out = rendering._CLEANER.clean(dirty)
    assert_inert(out)
    assert out == (
        "<p>hi</p>"
        f'<a target="_blank" rel="{LINK_REL}">a</a><a target="_blank" rel="{LINK_REL}">b</a>'
        '<span class="k">c</span><button type="submit" class="copy-code">d</button>'
    )


@pytest.mark.parametrize(
    "bad",
    [
        "<script>x</script>",
        "<p onclick=x>a</p>",
        "<p ONMOUSEOVER=x>a</p>",
        '<p style="x">a</p>',
        '<a href="javascript:x" rel="noopener noreferrer nofollow" target="_blank">a</a>',
        '<a href=" https://x" rel="noopener noreferrer nofollow" target="_blank">a</a>',
        '<a href="https://x">no rel</a>',
        "<img src=x>",
        "<svg></svg>",
        "<video></video>",
        '<p id="main">a</p>',
    ],
)
def test_the_inertness_check_catches_dangerous_html(bad: str) -> None:
    assert inertness_problems(bad) != []


FRAGMENTS = [
    "<",
    ">",
    '"',
    "'",
    "`",
    "```",
    "\n",
    "\n\n",
    " ",
    "[",
    "]",
    "(",
    ")",
    "!",
    "*",
    "_",
    "~~",
    "|",
    "-",
    "#",
    ">",
    "&",
    "&#x09;",
    "&#106;",
    ";",
    ":",
    "=",
    "/",
    "\\",
    "javascript:",
    "JaVaScRiPt:",
    "vbscript:",
    "data:text/html,",
    "https://example.com",
    "mailto:",
    "onerror=",
    "onload=",
    " onclick=",
    "alert(1)",
    "script",
    "<script>",
    "</script>",
    "<img src=x ",
    "<svg ",
    "<iframe ",
    "<a href=",
    "<style>",
    "<!--",
    "-->",
    "style=",
    "\x00",
    "\u202e",
]
markup_like = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=40).map(
    "".join
)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markup_like)
def test_markup_like_text_always_renders_inert(text: str) -> None:
    assert_inert(rendering._render(text))


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_unicode_always_renders_inert(text: str) -> None:
    assert_inert(rendering._render(text))


# --- highlight.css ---------------------------------------------------------------------------

HIGHLIGHT_CSS = Path(settings.BASE_DIR) / "static" / "css" / "highlight.css"
RULE = re.compile(r"(?P<selectors>[^{}]+?)\s*\{(?P<body>[^{}]*)\}")


def theme_rules() -> dict[str, list[tuple[str, dict[str, str]]]]:
    """The stylesheet's rules (one a line), grouped by the theme selector that scopes them."""
    css = re.sub(r"/\*.*?\*/", "", HIGHLIGHT_CSS.read_text(), flags=re.DOTALL)
    themes: dict[str, list[tuple[str, dict[str, str]]]] = {}
    in_media = False
    for line in css.splitlines():
        in_media = in_media or line.startswith("@media (prefers-color-scheme: dark)")
        match = RULE.fullmatch(line.strip())
        if match is None:
            continue
        selectors = match["selectors"]
        scope = selectors.split(" .code-block")[0]
        if in_media:
            scope = "@media dark " + scope
        pairs = (part.split(":", 1) for part in match["body"].split(";") if ":" in part)
        declarations = {name.strip(): value.strip() for name, value in pairs}
        themes.setdefault(scope, []).append((selectors, declarations))
    return themes


def hex6(color: str) -> str:
    color = color.lower()
    return "#" + "".join(c * 2 for c in color[1:]) if len(color) == 4 else color


def test_contrast_ratio_matches_wcag_examples() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#ffffff", "#777777") == contrast_ratio("#777777", "#ffffff")


def test_highlight_css_is_generated_from_the_renderer() -> None:
    assert HIGHLIGHT_CSS.read_text() == rendering.highlight_css()


def test_highlight_css_covers_every_theme() -> None:
    assert set(theme_rules()) == {
        'html[data-theme="light"]',
        'html[data-theme="dark"]',
        'html[data-theme="stellar"]',
        "@media dark html:not([data-theme])",
    }
    light = theme_rules()['html[data-theme="light"]']
    assert all("html:not([data-theme]) .code-block" in selectors for selectors, _ in light)
    assert "style" not in HIGHLIGHT_CSS.read_text().replace("font-style", "")


def test_highlighted_code_is_readable_in_every_theme() -> None:
    """WCAG AA (4.5:1) for every token colour against the code block background."""
    for theme, rules in theme_rules().items():
        frame = rules[0][1]
        assert rules[0][0].endswith(".code-block pre"), theme
        background, text = hex6(frame["background-color"]), hex6(frame["color"])
        assert len(rules) > 50, theme  # every Pygments token class, not a stub
        for selectors, declarations in rules:
            token_background = hex6(declarations.get("background-color", background))
            color = hex6(declarations.get("color", text))
            ratio = contrast_ratio(color, token_background)
            assert ratio >= 4.5, f"{theme}: {selectors} {color} on {token_background}: {ratio:.2f}"
