#!/usr/bin/env python3
"""Flattens the deploy files into `path<TAB>value` lines for tests/deploy_files.rs.

Run with the test's virtualenv (python-hcl2, PyYAML). The Rust test holds
every assertion; this script only parses, so that a parse error names the
file, and prints what it parsed in a form std can read.

  deploy_facts.py tf DIR          every *.tf in DIR, e.g.
      resource.aws_lb.ws.idle_timeout<TAB>${var.alb_idle_timeout_seconds}
      variable.cookie_name.default<TAB>WS_SESSION_ID
  deploy_facts.py yaml FILE...    every document, keyed by Kind/name, e.g.
      Deployment/wsgate.spec.template.spec.terminationGracePeriodSeconds<TAB>50
  deploy_facts.py checkov FILE    a checkov JSON report, summarized:
      summary<TAB>type<TAB>passed<TAB>failed<TAB>skipped<TAB>parsing_errors
      failed<TAB>id<TAB>resource<TAB>file:lines<TAB>title
      skipped<TAB>id<TAB>resource<TAB>reason
  deploy_facts.py regex FILE      FILE holds a regex line, then a subject
      line; prints group.N<TAB>text for a full match, or `nomatch`.

Values: strings as written (HCL escapes resolved), numbers in decimal,
booleans true/false; backslash, tab and newline escaped as \\\\, \\t, \\n.
"""

import json
import pathlib
import re
import sys


def escape(text):
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def flatten(prefix, value, out):
    if isinstance(value, dict):
        for key, inner in value.items():
            key = str(key)
            if key.startswith("__") and key.endswith("__"):
                continue  # parser metadata
            flatten(f"{prefix}.{key}" if prefix else key, inner, out)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            flatten(f"{prefix}.{index}", inner, out)
    else:
        out.append((prefix, scalar(value)))


def unquote(text):
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


_HCL_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def hcl_unescape(text):
    """Resolves the escapes of an HCL quoted string (python-hcl2 keeps them)."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _HCL_ESCAPES:
            out.append(_HCL_ESCAPES[text[i + 1]])
            i += 2
        elif text.startswith("$${", i) or text.startswith("%%{", i):
            out.append(text[i + 1 : i + 3])
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def clean(value):
    """Strips quotes from keys, resolves escapes in string values."""
    if isinstance(value, dict):
        return {unquote(str(k)): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, str):
        return hcl_unescape(unquote(value))
    return value


def terraform(directory):
    import hcl2
    from hcl2.utils import SerializationOptions

    options = SerializationOptions(
        with_comments=False,
        explicit_blocks=False,
        preserve_heredocs=False,
        strip_string_quotes=True,
    )
    files = sorted(pathlib.Path(directory).glob("*.tf"))
    if not files:
        sys.exit(f"no .tf files in {directory}")
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                parsed = hcl2.load(f, serialization_options=options)
        except Exception as e:  # any parse error: name the file
            sys.exit(f"{path}: not valid HCL: {e}")
        out.append((f"file.{path.name}", path.name))
        parsed = clean(parsed)
        for kind, entries in parsed.items():
            # `resource`, `data`: list of {type: {name: body}}; `variable`,
            # `output`: list of {name: body}; `locals`, `terraform`,
            # `provider`: list of bodies or {name: body}.
            for entry in entries if isinstance(entries, list) else [entries]:
                flatten(kind, entry, out)
    return out


def kubernetes(files):
    import yaml

    out = []
    for name in files:
        try:
            with open(name, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except Exception as e:
            sys.exit(f"{name}: not valid YAML: {e}")
        out.append((f"file.{pathlib.Path(name).name}", name))
        for doc in docs:
            kind = doc.get("kind", "?")
            meta = doc.get("metadata") or {}
            flatten(f"{kind}/{meta.get('name', '?')}", doc, out)
    return out


def checkov(report_file):
    with open(report_file, encoding="utf-8") as f:
        text = f.read()
    data = json.loads(text) if text.strip() else []
    reports = data if isinstance(data, list) else [data]
    out = []
    for r in reports:
        kind = r.get("check_type")
        if not kind:
            continue
        s = r.get("summary", {})
        out.append(
            "\t".join(
                ["summary", kind]
                + [str(s.get(k, 0)) for k in ("passed", "failed", "skipped", "parsing_errors")]
            )
        )
        results = r.get("results", {})
        for c in results.get("failed_checks", []):
            lines = "-".join(str(n) for n in c.get("file_line_range") or [])
            out.append(
                "\t".join(
                    [
                        "failed",
                        c.get("check_id", "?"),
                        c.get("resource", "?"),
                        f"{c.get('file_path', '?')}:{lines}",
                        c.get("check_name", ""),
                    ]
                )
            )
        for c in results.get("skipped_checks", []):
            reason = (c.get("check_result") or {}).get("suppress_comment", "")
            out.append(
                "\t".join(["skipped", c.get("check_id", "?"), c.get("resource", "?"), reason])
            )
    return out


def regex(case_file):
    with open(case_file, encoding="utf-8") as f:
        pattern, subject = f.read().split("\n")[:2]
    m = re.fullmatch(pattern, subject)
    if not m:
        return ["nomatch"]
    return [f"group.{i}\t{escape(g or '')}" for i, g in enumerate(m.groups(), 1)]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    command, args = argv[1], argv[2:]
    if command == "tf":
        for path, value in terraform(args[0]):
            print(f"{path}\t{escape(value)}")
    elif command == "yaml":
        for path, value in kubernetes(args):
            print(f"{path}\t{escape(value)}")
    elif command == "checkov":
        print("\n".join(checkov(args[0])))
    elif command == "regex":
        print("\n".join(regex(args[0])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
