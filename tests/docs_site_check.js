// Rendering checks for one page of the documentation site (mkdocs-material), run in the page by
// tests/test_docs_site.py. The expression's value is {problems: [...], links: [...], ids: [...]}:
// problems found in the page itself, every link and image URL (resolved by the browser) for the
// test to check against the built site, and every anchor the page offers to links from elsewhere.
(async () => {
  await document.fonts.ready;
  const problems = [];
  const content = document.querySelector("article.md-content__inner") || document.body;
  const body = content.querySelector("p") || content;
  const bodySize = parseFloat(getComputedStyle(body).fontSize);
  const where = (el) => {
    // the nearest heading above el, so that a problem can be found in the page's source
    let heading = null;
    for (const h of content.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
      if (h.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING || h.contains(el)) heading = h;
      else break;
    }
    return heading ? `under "${heading.textContent.replace(/¶$/, "").trim().slice(0, 80)}"` : "at the top";
  };
  const clip = (s, n = 100) => (s.length > n ? s.slice(0, n) + "…" : s);

  // 1. nothing needs horizontal scrolling: not the page, not a code block, not a table
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) {
    problems.push(`the page is ${root.scrollWidth - root.clientWidth} px wider than the window`);
  }
  const contentRight = content.getBoundingClientRect().right;
  const SLACK = 6; // px: inline code's padding may pass the column's edge where a line breaks
  const clipped = new Set(); // elements inside a box that clips or scrolls: they cannot stick out
  for (const el of content.querySelectorAll("*")) {
    const style = getComputedStyle(el);
    const scrolls = ["auto", "scroll"].includes(style.overflowX);
    const inside = clipped.has(el.parentElement);
    if (inside || style.overflowX !== "visible") clipped.add(el);
    if (scrolls && el.scrollWidth > el.clientWidth + 1) {
      const excess = el.scrollWidth - el.clientWidth;
      if (el.closest("pre")) {
        const lines = el.textContent.replace(/\n$/, "").split("\n");
        const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), "");
        const fits = Math.floor((longest.length * el.clientWidth) / el.scrollWidth);
        problems.push(
          `code block ${where(el)} scrolls sideways by ${excess} px: its longest line has ` +
            `${longest.length} characters, about ${fits} fit: ${clip(longest)}`,
        );
      } else if (el.tagName === "TABLE" || el.querySelector("table")) {
        const row = [...el.querySelectorAll("tr")].reduce(
          (a, b) => (b.textContent.length > a.textContent.length ? b : a),
          el.querySelector("tr"),
        );
        problems.push(
          `table ${where(el)} scrolls sideways by ${excess} px (widest row: ` +
            `${clip(row ? [...row.cells].map((c) => c.textContent.trim()).join(" | ") : "")})`,
        );
      } else {
        problems.push(`<${el.tagName.toLowerCase()}> ${where(el)} scrolls sideways by ${excess} px`);
      }
    } else if (!scrolls && !inside && el.getClientRects().length && el.getBoundingClientRect().right > contentRight + SLACK) {
      // visible overflow: it sticks out of the text column (reported once, at the outermost)
      const parent = el.parentElement;
      if (!parent || parent === content || parent.getBoundingClientRect().right <= contentRight + SLACK) {
        const px = Math.round(el.getBoundingClientRect().right - contentRight);
        problems.push(
          `<${el.tagName.toLowerCase()}> ${where(el)} sticks out of the text column by ${px} px: ` +
            clip(el.textContent.trim()),
        );
      }
    }
  }

  // 2. no markdown escapes left over as text: a `\|` shows where a table cell's pipe was
  //    escaped for a markdown engine that did not need it (code blocks are verbatim: skipped)
  // 3. doctest examples are code: no ">>>" in running text, no nested blockquotes
  const walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent;
    const parent = node.parentElement;
    if (parent.closest("pre")) continue;
    if (text.includes("\\|")) {
      const cell = parent.closest("td, th, li, p") || parent;
      problems.push(`literal "\\|" ${where(parent)}: ${clip(cell.textContent.trim())}`);
    }
    if (/^\s*>>>(\s|$)/.test(text) && !parent.closest("code")) {
      problems.push(`a doctest line outside a code block ${where(parent)}: ${clip(text.trim())}`);
    }
  }
  for (const quote of content.querySelectorAll("blockquote blockquote")) {
    if (quote.parentElement.closest("blockquote blockquote")) continue;
    problems.push(
      `nested blockquotes ${where(quote)} (a ">>>" example not rendered as code?): ` +
        clip(quote.textContent.trim()),
    );
  }

  // 4. API headings (mkdocstrings) stay headings: a moderate size, one or two lines; a long
  //    signature belongs in a code block under the heading
  for (const h of content.querySelectorAll(".doc-heading")) {
    const style = getComputedStyle(h);
    const size = parseFloat(style.fontSize);
    const lineHeight = parseFloat(style.lineHeight) || size * 1.3;
    const lines = Math.round(h.getBoundingClientRect().height / lineHeight);
    const name = clip(h.textContent.replace(/¶$/, "").trim(), 60);
    if (size > 1.3 * bodySize + 0.5) {
      problems.push(
        `API heading "${name}" is ${size.toFixed(1)} px, over 1.3 x the text's ${bodySize.toFixed(1)} px`,
      );
    }
    if (lines > 2) problems.push(`API heading "${name}" takes ${lines} lines`);
  }

  // 5. what links point to, checked by the test against the built site
  const links = [];
  for (const a of document.querySelectorAll("a[href]")) {
    links.push({ url: a.href, text: clip(a.textContent.trim(), 60), where: content.contains(a) ? where(a) : "in the navigation" });
  }
  for (const img of document.querySelectorAll("img[src]")) {
    links.push({ url: img.src, text: img.alt || "(image)", where: where(img) });
  }
  const ids = [...document.querySelectorAll("[id]")].map((el) => el.id);
  ids.push(...[...document.querySelectorAll("a[name]")].map((el) => el.name));
  return { problems, links, ids };
})()
