package main

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocLinksResolve: every relative link of every Markdown file of the
// repository leads somewhere — the file or directory exists inside the
// repository, and a #fragment is a heading of the Markdown file it names.
func TestDocLinksResolve(t *testing.T) {
	t.Parallel()
	files := markdownFiles(t, ".")
	require.Contains(t, files, "README.md")
	require.Contains(t, files, filepath.Join("docs", "operations.md"))
	broken := brokenLinks(t, ".", files)
	require.Empty(t, broken, "broken links in the documentation:\n%s", strings.Join(broken, "\n"))
}

// TestBrokenLinksAreFound pins what brokenLinks reports, so that
// TestDocLinksResolve cannot pass by finding nothing.
func TestBrokenLinksAreFound(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(name, text string) {
		require.NoError(t, os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, name), []byte(text), 0o644))
	}
	write("README.md", strings.Join([]string{
		"# Top",
		"## Quick start: `go run .`",
		"## Quick start: `go run .`",
		"[ok](docs/a.md) [ok](docs/a.md#the-a-section) [ok](#quick-start-go-run-) [ok](#quick-start-go-run--1)",
		"[ok](docs) [ok](https://example.com/x.md#nope) [ok](<docs/a.md>) ![ok](docs/a.md)",
		"[missing file](docs/b.md) [missing anchor](docs/a.md#nope) [outside](../elsewhere.md)",
		"[missing here](#nope) [anchor on code](main.go#L1)",
		"`[in code](nowhere.md)`",
		"```",
		"[in a fence](nowhere.md)",
		"```",
		"[ref]: docs/c.md",
	}, "\n"))
	write("docs/a.md", "# The A section\n[up](../README.md#top)\n")
	write("main.go", "package main\n")

	got := brokenLinks(t, root, []string{"README.md", filepath.Join("docs", "a.md")})
	require.Equal(t, []string{
		"README.md: [missing file](docs/b.md): no such file",
		"README.md: [missing anchor](docs/a.md#nope): docs/a.md has no heading #nope",
		"README.md: [outside](../elsewhere.md): outside the repository",
		"README.md: [missing here](#nope): README.md has no heading #nope",
		"README.md: [anchor on code](main.go#L1): a #fragment is checked only on a Markdown file",
		"README.md: [ref](docs/c.md): no such file",
	}, got)
}

// markdownFiles lists the Markdown files under root, relative to it,
// skipping hidden directories (.git, .ci).
func markdownFiles(t *testing.T, root string) []string {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, rel)
		}
		return nil
	})
	require.NoError(t, err)
	return files
}

var (
	// inlineLink is [text](target) or ![alt](target), with an optional
	// title; a target in <…> may hold spaces.
	inlineLink = regexp.MustCompile(`!?\[([^\]]*)\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+"[^"]*")?\s*\)`)
	// referenceLink is a link reference definition: [label]: target.
	referenceLink = regexp.MustCompile(`^\s{0,3}\[([^\]]+)\]:\s*(\S+)`)
	codeSpan      = regexp.MustCompile("`+[^`]*`+")
	scheme        = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// brokenLinks checks the relative links of files (relative to root) and
// returns one line per broken link, in file and line order.
func brokenLinks(t *testing.T, root string, files []string) []string {
	absRoot, err := filepath.Abs(root)
	require.NoError(t, err)
	anchors := map[string]map[string]bool{} // Markdown file (relative to root) -> its heading anchors
	anchorsOf := func(rel string) map[string]bool {
		if a, ok := anchors[rel]; ok {
			return a
		}
		text, err := os.ReadFile(filepath.Join(root, rel))
		require.NoError(t, err)
		anchors[rel] = headingAnchors(string(text))
		return anchors[rel]
	}

	var broken []string
	for _, file := range files {
		text, err := os.ReadFile(filepath.Join(root, file))
		require.NoError(t, err)
		for _, l := range markdownLinks(string(text)) {
			problem := func(format string, args ...any) {
				broken = append(broken, fmt.Sprintf("%s: [%s](%s): %s", file, l.text, l.target, fmt.Sprintf(format, args...)))
			}
			target := strings.TrimSuffix(strings.TrimPrefix(l.target, "<"), ">")
			if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
				continue // absolute: not this repository's to check
			}
			path, fragment, _ := strings.Cut(target, "#")
			if p, err := url.PathUnescape(path); err == nil {
				path = p
			}
			rel := file // a bare #fragment is this file's
			if path != "" {
				abs := filepath.Join(absRoot, filepath.Dir(file), filepath.FromSlash(path))
				r, err := filepath.Rel(absRoot, abs)
				if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
					problem("outside the repository")
					continue
				}
				rel = r
				if _, err := os.Stat(abs); err != nil {
					problem("no such file")
					continue
				}
			}
			if fragment == "" {
				continue
			}
			if !strings.HasSuffix(rel, ".md") {
				problem("a #fragment is checked only on a Markdown file")
				continue
			}
			if !anchorsOf(rel)[fragment] {
				problem("%s has no heading #%s", filepath.ToSlash(rel), fragment)
			}
		}
	}
	return broken
}

type mdLink struct{ text, target string }

// markdownLinks returns the links of a Markdown text outside fenced code
// blocks and code spans, in order.
func markdownLinks(text string) []mdLink {
	var links []mdLink
	fence := ""
	for _, line := range strings.Split(text, "\n") {
		if f, ok := fenceOf(line); ok {
			switch {
			case fence == "":
				fence = f
				continue
			case strings.HasPrefix(strings.TrimSpace(line), fence):
				fence = ""
				continue
			}
		}
		if fence != "" {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		if m := referenceLink.FindStringSubmatch(line); m != nil {
			links = append(links, mdLink{m[1], m[2]})
			continue
		}
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			links = append(links, mdLink{m[1], m[2]})
		}
	}
	return links
}

// fenceOf reports whether line opens or closes a fenced code block, and
// with which fence (``` or ~~~).
func fenceOf(line string) (string, bool) {
	s := strings.TrimLeft(line, " ")
	if len(line)-len(s) > 3 {
		return "", false
	}
	for _, f := range []string{"```", "~~~"} {
		if strings.HasPrefix(s, f) {
			return f, true
		}
	}
	return "", false
}

// headingAnchors returns the anchors GitHub gives the ATX headings of a
// Markdown text: the heading's text (links reduced to their text) through
// githubAnchor, and a heading that repeats an earlier anchor gets -1, -2, ….
func headingAnchors(text string) map[string]bool {
	linkText := regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	anchors := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	for _, line := range strings.Split(text, "\n") {
		if f, ok := fenceOf(line); ok {
			if fence == "" {
				fence = f
			} else if strings.HasPrefix(strings.TrimSpace(line), fence) {
				fence = ""
			}
			continue
		}
		if fence != "" {
			continue
		}
		s := strings.TrimLeft(line, " ")
		if len(line)-len(s) > 3 || !strings.HasPrefix(s, "#") {
			continue
		}
		level := len(s) - len(strings.TrimLeft(s, "#"))
		heading := s[level:]
		if level > 6 || heading != "" && heading[0] != ' ' && heading[0] != '\t' {
			continue
		}
		// A closing sequence of #s is not part of the heading.
		heading = strings.TrimSpace(heading)
		if trimmed := strings.TrimRight(heading, "#"); trimmed == "" || strings.HasSuffix(trimmed, " ") {
			heading = trimmed
		}
		a := githubAnchor(linkText.ReplaceAllString(heading, "$1"))
		if n := seen[a]; n > 0 {
			seen[a] = n + 1
			a = fmt.Sprintf("%s-%d", a, n)
		} else {
			seen[a] = 1
		}
		anchors[a] = true
	}
	return anchors
}
