#!/usr/bin/env python3
"""Writes a Hugo site with the page set of sesame's gallery example.

  hugo_site.py gen GALLERY.ndjson SITEDIR    config, layouts, one content file per item
  hugo_site.py add SITEDIR ID DATE TITLE     one new item (dated no later than today:
                                             Hugo skips future-dated pages)

Pages: /gallery/<id>/ per item; /gallery/ newest first, 60 a page; /tags/<t>/ and
/owners/<o>/ term pages, 60 a page; /tags/ and /owners/ term lists; home; sitemap.
HTML and sitemap only (no RSS). Item pages link their terms from the page's own
fields: Hugo 0.111's .GetTerms is quadratic in the taxonomy size.
"""
import json
import os
import sys

CONFIG = """baseURL = "http://127.0.0.1:8089/"
title = "Sprite Gallery"
languageCode = "en-us"
paginate = 60
disableHugoGeneratorInject = true
[taxonomies]
  tag = "tags"
  owner = "owners"
[outputs]
  home = ["HTML"]
  section = ["HTML"]
  taxonomy = ["HTML"]
  term = ["HTML"]
  page = ["HTML"]
"""

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ with .Title }}{{ . }} · {{ end }}{{ site.Title }}</title>
<link rel="canonical" href="{{ .Permalink }}">
</head><body>
<nav><a href="/">{{ site.Title }}</a> · <a href="/gallery/">Gallery</a></nav>
<main>{{ block "main" . }}{{ end }}</main>
</body></html>
"""

CARD = """<li><a href="{{ .RelPermalink }}">{{ with .Title }}{{ . }}{{ else }}Untitled{{ end }}</a>
{{ if not .Date.IsZero }}<time datetime="{{ .Date.Format "2006-01-02" }}">{{ .Date.Format "Jan 2006" }}</time>{{ end }}</li>
"""

PAGER = """{{ $p := .Paginator }}{{ if gt $p.TotalPages 1 }}<nav>
{{ with $p.Prev }}<a rel="prev" href="{{ .URL }}">newer</a>{{ end }} page {{ $p.PageNumber }} of {{ $p.TotalPages }}
{{ with $p.Next }}<a rel="next" href="{{ .URL }}">older</a>{{ end }}</nav>{{ end }}
"""

LIST = """{{ define "main" }}<h1>{{ .Title }}</h1>
<ul>{{ range (.Paginate .Pages 60).Pages }}{{ partial "card.html" . }}{{ end }}</ul>
{{ partial "pager.html" . }}{{ end }}
"""

TERMS = """{{ define "main" }}<h1>{{ .Title }}</h1>
<ul>{{ range (.Paginate .Pages 60).Pages }}<li><a href="{{ .RelPermalink }}">{{ .LinkTitle }}</a> ({{ len .Pages }})</li>{{ end }}</ul>
{{ partial "pager.html" . }}{{ end }}
"""

SINGLE = """{{ define "main" }}<article><h1>{{ with .Title }}{{ . }}{{ else }}Untitled{{ end }}</h1>
<p>{{ if not .Date.IsZero }}{{ .Date.Format "January 2006" }}{{ end }}
by <a href="{{ printf "/owners/%s/" (urlize .Params.owner) }}">{{ .Params.owner }}</a></p>
<ul>{{ range .Params.tags }}<li><a href="{{ printf "/tags/%s/" (urlize .) }}">#{{ . }}</a></li>{{ end }}</ul>
{{ .Content }}</article>{{ end }}
"""

HOME = """{{ define "main" }}<h1>{{ site.Title }}</h1>
<ul>{{ range first 12 (where site.RegularPages "Section" "gallery") }}{{ partial "card.html" . }}{{ end }}</ul>
{{ end }}
"""

LAYOUTS = {
    "_default/baseof.html": BASE,
    "partials/card.html": CARD,
    "partials/pager.html": PAGER,
    "_default/list.html": LIST,
    "_default/term.html": LIST,
    "_default/taxonomy.html": TERMS,
    "_default/single.html": SINGLE,
    "index.html": HOME,
}


def toml(s):
    # JSON escapes are valid in TOML basic strings; TOML also forbids a raw DEL.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def page(item):
    lines = ["+++", f"title = {toml(item.get('title') or '')}"]
    if item.get("created"):
        lines.append(f"date = {toml(item['created'])}")
    lines.append("tags = [" + ", ".join(toml(t) for t in item.get("tags") or []) + "]")
    lines.append(f"owners = [{toml(item['owner'])}]")
    lines.append(f"owner = {toml(item['owner'])}")
    lines.append("+++")
    return "\n".join(lines) + f"\n\nPublished by **{item['owner']}**.\n"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def gen(ndjson, site):
    write(os.path.join(site, "config.toml"), CONFIG)
    for rel, text in LAYOUTS.items():
        write(os.path.join(site, "layouts", rel), text)
    write(os.path.join(site, "content", "gallery", "_index.md"), '+++\ntitle = "Gallery"\n+++\n')
    n = 0
    with open(ndjson, encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            write(os.path.join(site, "content", "gallery", f"{item['id']}.md"), page(item))
            n += 1
    print(f"{n} items", file=sys.stderr)


def add(site, id_, date, title):
    item = {"id": id_, "title": title, "created": date, "owner": "benchmark", "tags": ["benchmark", "data"]}
    write(os.path.join(site, "content", "gallery", f"{id_}.md"), page(item))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"gen": gen, "add": add}[cmd](*args)
