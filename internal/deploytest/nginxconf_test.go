package deploytest

import (
	"fmt"
	"strings"
	"unicode"
)

// directive is one nginx directive: its name, its arguments and, for a
// block directive (http, upstream, location ...), what the block holds.
type directive struct {
	name  string
	args  []string
	block []directive
}

// parseNginx parses nginx configuration text into directives: enough of the
// grammar (comments, quotes, blocks) for tests to look at its structure
// rather than grep its text.
func parseNginx(src string) ([]directive, error) {
	toks, err := tokenizeNginx(src)
	if err != nil {
		return nil, err
	}
	ds, rest, err := parseBlock(toks, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("unexpected %q at top level", rest[0])
	}
	return ds, nil
}

func parseBlock(toks []string, depth int) ([]directive, []string, error) {
	var ds []directive
	var cur []string
	for len(toks) > 0 {
		t := toks[0]
		toks = toks[1:]
		switch t {
		case ";":
			if len(cur) == 0 {
				return nil, nil, fmt.Errorf("empty directive")
			}
			ds = append(ds, directive{name: cur[0], args: cur[1:]})
			cur = nil
		case "{":
			if len(cur) == 0 {
				return nil, nil, fmt.Errorf("block without a name")
			}
			block, rest, err := parseBlock(toks, depth+1)
			if err != nil {
				return nil, nil, err
			}
			ds = append(ds, directive{name: cur[0], args: cur[1:], block: block})
			cur, toks = nil, rest
		case "}":
			if depth == 0 || len(cur) > 0 {
				return nil, nil, fmt.Errorf("unexpected }")
			}
			return ds, toks, nil
		default:
			cur = append(cur, t)
		}
	}
	if depth > 0 || len(cur) > 0 {
		return nil, nil, fmt.Errorf("unexpected end of file")
	}
	return ds, nil, nil
}

// tokenizeNginx splits src into words, quoted strings (unquoted) and the
// punctuation ; { }, dropping comments.
func tokenizeNginx(src string) ([]string, error) {
	var toks []string
	rs := []rune(src)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '#':
			for i < len(rs) && rs[i] != '\n' {
				i++
			}
		case r == ';' || r == '{' || r == '}':
			toks = append(toks, string(r))
			i++
		case r == '\'' || r == '"':
			j := i + 1
			for j < len(rs) && rs[j] != r {
				if rs[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, string(rs[i+1:j]))
			i = j + 1
		default:
			j := i
			for j < len(rs) && !unicode.IsSpace(rs[j]) && !strings.ContainsRune(";{}", rs[j]) {
				j++
			}
			toks = append(toks, string(rs[i:j]))
			i = j
		}
	}
	return toks, nil
}

// find returns the directives named name among ds whose first arguments
// are args.
func find(ds []directive, name string, args ...string) []directive {
	var out []directive
	for _, d := range ds {
		if d.name != name || len(d.args) < len(args) {
			continue
		}
		ok := true
		for i, a := range args {
			if d.args[i] != a {
				ok = false
			}
		}
		if ok {
			out = append(out, d)
		}
	}
	return out
}
