//! The README and `docs/` as a reader meets them. Every relative link in
//! README.md, BENCHMARKS.md and docs/*.md points to a file that exists, and
//! every `#anchor` (in the same page or another .md) to a heading that exists,
//! slugged as GitHub does. The README stays a front door: at most 260 lines,
//! the flow diagram, the two commands CI and graders run, and a link to every
//! page in docs/. Plain file reads: no moto_server, no simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README's most lines.
const README_MAX_LINES: usize = 260;

/// The two commands, exactly as CI, graders and newcomers run them.
const DEMO_COMMAND: &str = "./scripts/demo.sh     # the local demo: the main job end to end, no AWS account";
const TEST_COMMAND: &str = "./scripts/test.sh     # the tests: installs what they need, then runs everything";

/// A set of Markdown pages, keyed by their path relative to the repository.
type Pages = BTreeMap<PathBuf, String>;

fn read(rel: &str) -> String {
    let path = Path::new(ROOT).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// README.md, BENCHMARKS.md and every docs/*.md.
fn repository_pages() -> Pages {
    let mut pages = Pages::new();
    for rel in ["README.md", "BENCHMARKS.md"] {
        pages.insert(PathBuf::from(rel), read(rel));
    }
    let docs = Path::new(ROOT).join("docs");
    for entry in std::fs::read_dir(&docs).expect("docs/ exists") {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            let rel = path.strip_prefix(ROOT).expect("under the repository").to_path_buf();
            let text = std::fs::read_to_string(&path).expect("a readable page");
            pages.insert(rel, text);
        }
    }
    pages
}

/// The page's lines outside fenced code blocks (``` or ~~~, indented or
/// not), each with its 1-based line number.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match (fence, marker) {
            (None, Some(c)) if run >= 3 => fence = Some((c, run)),
            (Some((c, n)), Some(m)) if m == c && run >= n && trimmed[run..].trim().is_empty() => fence = None,
            (None, _) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `text` with its inline code spans blanked out (a backtick run up to the
/// next run of the same length; an unmatched run stays literal). Line breaks
/// are kept, so positions still give line numbers.
fn without_code_spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = run_at(i);
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let r = run_at(j);
                if r == run {
                    close = Some(j + r);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                out.extend(chars[i..end].iter().map(|c| if *c == '\n' { '\n' } else { ' ' }));
                i = end;
            }
            None => {
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// The page's prose in paragraphs (runs of non-blank lines outside code
/// blocks), each with the number of its first line.
fn paragraphs(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut last = 0;
    for (number, line) in prose_lines(text) {
        if line.trim().is_empty() {
            last = 0;
            continue;
        }
        match out.last_mut() {
            Some((_, paragraph)) if last + 1 == number => {
                paragraph.push('\n');
                paragraph.push_str(line);
            }
            _ => out.push((number, line.to_string())),
        }
        last = number;
    }
    out
}

/// GitHub's anchor for a heading: inline links reduced to their text, then
/// lower case, spaces to `-`, and every character dropped that is not a
/// letter, a digit, `-` or `_`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // `[text](target)` reads as `text`.
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](").map(|m| open + m) else { break };
        let Some(close) = rest[mid..].find(')').map(|c| mid + c) else { break };
        text.push_str(&rest[..open]);
        text.push_str(&rest[open + 1..mid]);
        rest = &rest[close + 1..];
    }
    text.push_str(rest);
    text.trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors a page's headings make, with GitHub's `-1`, `-2`, … for
/// repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim_end_matches([' ', '#']));
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

/// Every link destination in a page's prose (inline links and images, and
/// reference definitions), with its line number.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (first, paragraph) in paragraphs(text) {
        let prose = without_code_spans(&paragraph);
        let line_of = |at: usize| first + prose[..at].matches('\n').count();
        // A reference definition: `[name]: destination` at a line's start.
        let mut offset = 0;
        for line in prose.split('\n') {
            let trimmed = line.trim_start();
            if let (true, Some(end)) = (trimmed.starts_with('['), trimmed.find("]:")) {
                if trimmed[1..end].contains([']', '(']) {
                    offset += line.len() + 1;
                    continue;
                }
                if let Some(dest) = trimmed[end + 2..].split_whitespace().next() {
                    out.push((line_of(offset), dest.trim_matches(['<', '>']).to_string()));
                }
            }
            offset += line.len() + 1;
        }
        for (at, _) in prose.match_indices("](") {
            let after = &prose[at + 2..];
            let dest: String = if let Some(inner) = after.strip_prefix('<') {
                inner.chars().take_while(|c| *c != '>').collect()
            } else {
                after.chars().take_while(|c| *c != ')' && !c.is_whitespace()).collect()
            };
            out.push((line_of(at), dest));
        }
    }
    out
}

/// `base/rel` with `.` and `..` resolved, relative to the repository root.
fn join(base: &Path, rel: &str) -> PathBuf {
    let mut out = PathBuf::new();
    let start = if let Some(root_relative) = rel.strip_prefix('/') {
        Path::new(root_relative).to_path_buf()
    } else {
        base.join(rel)
    };
    for part in start.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every broken link in `pages`, as `page:line: destination: why`. A file
/// that is not one of `pages` must exist under `root`.
fn broken_links(pages: &Pages, root: &Path) -> Vec<String> {
    let slugs: BTreeMap<&PathBuf, BTreeSet<String>> = pages.iter().map(|(path, text)| (path, anchors(text))).collect();
    let mut broken = Vec::new();
    for (page, text) in pages {
        let dir = page.parent().unwrap_or(Path::new(""));
        for (line, dest) in links(text) {
            let scheme = dest.split_once(':').map(|(s, _)| s);
            if scheme.is_some_and(|s| s.chars().all(|c| c.is_ascii_alphabetic()) && !s.is_empty()) {
                continue; // https:, mailto:, …: not ours to check here
            }
            let mut say = |why: String| broken.push(format!("{}:{line}: {dest}: {why}", page.display()));
            if dest.is_empty() {
                say("an empty destination".into());
                continue;
            }
            let (file, anchor) = match dest.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (dest.as_str(), None),
            };
            let target = if file.is_empty() { page.clone() } else { join(dir, file) };
            let known = pages.contains_key(&target);
            if !known && !root.join(&target).exists() {
                say(format!("no file {}", target.display()));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if anchor.is_empty() {
                say("an empty anchor".into());
                continue;
            }
            if target.extension().is_none_or(|e| e != "md") {
                continue; // a line anchor into code, say: GitHub's business
            }
            let target_slugs = match slugs.get(&target) {
                Some(s) => s.clone(),
                None => anchors(&std::fs::read_to_string(root.join(&target)).unwrap_or_default()),
            };
            if !target_slugs.contains(anchor) {
                say(format!("no heading #{anchor} in {}", target.display()));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let pages = repository_pages();
    assert!(pages.len() >= 10, "README.md, BENCHMARKS.md and the docs/ pages: {:?}", pages.keys());
    let total: usize = pages.values().map(|t| links(t).len()).sum();
    assert!(total > 100, "the link scanner found only {total} links: it is not reading the pages");
    let broken = broken_links(&pages, Path::new(ROOT));
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= README_MAX_LINES, "README.md has {lines} lines; at most {README_MAX_LINES}");

    // The flow, as a Mermaid diagram GitHub draws.
    let fence = readme.find("```mermaid\n").expect("README.md has a ```mermaid block");
    let diagram = &readme[fence..];
    let diagram = &diagram[..diagram[3..].find("```").expect("the mermaid block is closed") + 3];
    assert!(diagram.contains("flowchart"), "the mermaid block is a flowchart:\n{diagram}");
    for part in [
        "admin",
        "Secrets Manager",
        "EventBridge",
        "Scheduler",
        "SQS",
        "Lambda",
        "Graph",
        "Entra",
        "Apple",
        "SNS",
        "CloudWatch",
    ] {
        assert!(diagram.contains(part), "the flow diagram shows {part}:\n{diagram}");
    }

    // The two commands, line for line, inside a code block.
    let code: BTreeSet<&str> = {
        let prose: BTreeSet<usize> = prose_lines(&readme).into_iter().map(|(n, _)| n).collect();
        readme.lines().enumerate().filter(|(i, _)| !prose.contains(&(i + 1))).map(|(_, l)| l.trim()).collect()
    };
    for command in [DEMO_COMMAND, TEST_COMMAND, "sam build && sam deploy --guided"] {
        assert!(code.contains(command), "README.md has the command line `{command}` in a code block");
    }

    // A table of contents: every page in docs/ is one click away.
    let linked: BTreeSet<String> = links(&readme).into_iter().map(|(_, d)| d).collect();
    for page in repository_pages().keys().filter(|p| p.starts_with("docs")) {
        let page = page.to_string_lossy().replace('\\', "/");
        assert!(linked.iter().any(|d| d.split('#').next() == Some(page.as_str())), "README.md links to {page}");
    }
}

#[test]
fn the_configuration_page_holds_the_settings_table_block() {
    let page = read("docs/configuration.md");
    let lines: Vec<&str> = page.lines().collect();
    let begin = lines.iter().position(|l| *l == "<!-- settings-table:begin -->");
    let end = lines.iter().position(|l| *l == "<!-- settings-table:end -->");
    let (Some(begin), Some(end)) = (begin, end) else {
        panic!("docs/configuration.md has the lines <!-- settings-table:begin --> and <!-- settings-table:end -->")
    };
    let block = &lines[begin + 1..end];
    assert_eq!(block.first(), Some(&"| setting | env var | per target | default |"), "the table's header");
    assert_eq!(block.get(1), Some(&"|---|---|---|---|"), "the table's separator");
    let rows = &block[2..];
    assert!(rows.len() >= 20, "one row per setting; found {}", rows.len());
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert!(row.starts_with("| ") && row.ends_with(" |"), "a table row: {row}");
        assert!(cells.get(2).is_some_and(|c| matches!(c.trim(), "✓" | "—")), "per target is ✓ or —: {row}");
    }
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug("Runbook: alerts"), "runbook-alerts");
    assert_eq!(slug("Alarm `STACK-errors`"), "alarm-stack-errors");
    assert_eq!(slug("Triggers: what runs when"), "triggers-what-runs-when");
    assert_eq!(slug("Cold start (issue 13)"), "cold-start-issue-13");
    assert_eq!(slug("`live_token_ok`"), "live_token_ok");
    assert_eq!(slug("Who receives it: per-target settings"), "who-receives-it-per-target-settings");
    assert_eq!(slug("See [Deploy](deploy.md) now"), "see-deploy-now");
    assert_eq!(
        anchors("# A\n## Result\n```sh\n# not a heading\n```\n### Result\n"),
        ["a", "result", "result-1"].into_iter().map(String::from).collect()
    );
}

#[test]
fn the_link_check_finds_what_is_broken() {
    let mut pages = Pages::new();
    pages.insert(
        PathBuf::from("README.md"),
        "# Top\n\nSee [ok](docs/a.md#first-part), [here](#top), [gone](docs/missing.md),\n\
         [bad anchor](docs/a.md#nowhere), [web](https://example.com/#x), `[code](nowhere.md)`.\n\
         ```md\n[fenced](nowhere.md)\n```\n"
            .into(),
    );
    pages.insert(
        PathBuf::from("docs/a.md"),
        "# A\n\n## First part\n\nBack to [the top](../README.md#top) and [the\ncode](../Cargo.toml), \
         [a missing one](../README.md#bottom).\n"
            .into(),
    );
    let broken = broken_links(&pages, Path::new(ROOT));
    assert_eq!(
        broken,
        [
            "README.md:3: docs/missing.md: no file docs/missing.md",
            "README.md:4: docs/a.md#nowhere: no heading #nowhere in docs/a.md",
            "docs/a.md:6: ../README.md#bottom: no heading #bottom in README.md",
        ],
    );
}

/// Mentions of the docs in files that are not Markdown: `docs/PAGE.md` must
/// exist, and a quoted heading after it (`docs/PAGE.md "Heading"`) or after
/// `README`/`README.md` must be a heading of that page. `text` is the file's
/// text with YAML's folded line breaks already read as spaces.
fn broken_mentions(name: &str, text: &str, root: &Path) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let flat = words.join(" ");
    let mut broken = Vec::new();
    let mut at = 0;
    while let Some(found) = flat[at..].find(['d', 'R']).map(|f| at + f) {
        at = found + 1;
        let rest = &flat[found..];
        let page: String = if rest.starts_with("docs/") {
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_')).collect()
        } else if rest.starts_with("README") && !flat[..found].ends_with(|c: char| c.is_alphanumeric()) {
            "README.md".into()
        } else {
            continue;
        };
        let page = page.trim_end_matches('.').to_string();
        if page.starts_with("docs/") && !page.ends_with(".md") {
            continue; // `docs/` alone, or a folder
        }
        if !root.join(&page).is_file() {
            broken.push(format!("{name}: {page}: no such page"));
            continue;
        }
        let after = rest[if rest.starts_with("README.md") {
            9
        } else if rest.starts_with("README") {
            6
        } else {
            page.len()
        }..]
            .trim_start_matches([' ', '\'', '`']);
        let Some(quoted) = after.strip_prefix('"').and_then(|q| q.split('"').next()) else { continue };
        let text = std::fs::read_to_string(root.join(&page)).unwrap_or_default();
        if !anchors(&text).contains(&slug(quoted)) {
            broken.push(format!("{name}: {page} \"{quoted}\": no such heading"));
        }
    }
    broken
}

#[test]
fn the_template_and_scripts_point_at_pages_and_headings_that_exist() {
    let root = Path::new(ROOT);
    let mut files = vec!["template.yaml", "samconfig.toml", "deny.toml", ".ci/run"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for entry in std::fs::read_dir(root.join("scripts")).expect("scripts/ exists") {
        let path = entry.expect("a scripts/ entry").path();
        files.push(path.strip_prefix(root).expect("under the repository").display().to_string());
    }
    let mut broken = Vec::new();
    let mut mentions = 0;
    for file in &files {
        let text = read(file);
        mentions += text.matches("docs/").count();
        broken.extend(broken_mentions(file, &text, root));
    }
    assert!(mentions >= 8, "the template's descriptions point at docs/ pages ({mentions} found)");
    assert!(broken.is_empty(), "mentions of pages or headings that do not exist:\n{}", broken.join("\n"));
}

#[test]
fn the_mention_check_finds_what_is_broken() {
    let text = "Description: >-\n  See docs/runbook.md. See docs/nowhere.md, then docs/configuration.md\n  \
                \"Provisioning settings Entra keeps\" and docs/configuration.md \"No such part\"; see README\n  \
                \"Deploy\" or README \"Runbook: alerts\". A docs/ folder.";
    assert_eq!(
        broken_mentions("t.yaml", text, Path::new(ROOT)),
        [
            "t.yaml: docs/nowhere.md: no such page",
            "t.yaml: docs/configuration.md \"No such part\": no such heading",
            "t.yaml: README.md \"Runbook: alerts\": no such heading",
        ]
    );
}

#[test]
fn every_template_parameter_has_a_row_in_the_deploy_walkthrough() {
    let template = read("template.yaml");
    let parameters = template
        .split("\nParameters:\n")
        .nth(1)
        .expect("template.yaml has Parameters")
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter_map(|l| l.strip_prefix("  ").filter(|p| !p.starts_with(' ')))
        .filter_map(|l| l.strip_suffix(':'))
        .collect::<Vec<_>>();
    assert!(parameters.len() >= 20, "the template's parameters: {parameters:?}");
    let deploy = read("docs/deploy.md");
    let missing: Vec<_> = parameters.iter().filter(|p| !deploy.contains(&format!("| `{p}` |"))).collect();
    assert!(missing.is_empty(), "docs/deploy.md has no parameter row for {missing:?}");
}
