// ctrender renders a consul-template template with Go's own text/template, its functions served
// from a JSON snapshot of the same Consul and Vault data confsync reads (tests/test_convert_go.py).
//
// The functions follow consul-template's documented behaviour (template/funcs.go, dependency/*.go):
// written for these tests with the standard library only, so the build needs no module download.
//
// usage: ctrender SNAPSHOT.json TEMPLATE [LEFT RIGHT]
//
// main.go: the snapshot and the FuncMap; consul.go: KV, catalog and Connect; vault.go: secret and
// secrets; text.go: the functions that only compute.
package main

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/template"
)

type snapshot struct {
	KV          map[string]string          `json:"kv"`
	Health      map[string][]healthEntry   `json:"health"`
	Connect     map[string][]healthEntry   `json:"connect"`
	Catalog     map[string][]string        `json:"catalog"`
	Nodes       []*Node                    `json:"nodes"`
	NodesNear   map[string][]*Node         `json:"nodes_near"`
	HealthNear  map[string][]healthEntry   `json:"health_near"`
	Node        map[string]catalogNode     `json:"node"`
	AgentNode   string                     `json:"agent_node"`
	Datacenters []string                   `json:"datacenters"`
	CARoots     struct{ Roots []*CARoot }  `json:"ca_roots"`
	CALeaf      map[string]*LeafCert       `json:"ca_leaf"`
	Secrets     map[string]json.RawMessage `json:"secrets"`
	Lists       map[string][]string        `json:"lists"`
}

var snap snapshot

// root is the template being rendered, for executeTemplate.
var root *template.Template

// executeTemplate is consul-template's executeTemplateFunc: a named template's output, with the
// given value (or nil) as its dot.
func executeTemplate(name string, data ...interface{}) (string, error) {
	var dot interface{}
	switch len(data) {
	case 0:
	case 1:
		dot = data[0]
	default:
		return "", fmt.Errorf("executeTemplate: wrong number of arguments")
	}
	var b bytes.Buffer
	if err := root.ExecuteTemplate(&b, name, dot); err != nil {
		return "", err
	}
	return b.String(), nil
}

func main() {
	if len(os.Args) != 3 && len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: ctrender SNAPSHOT.json TEMPLATE [LEFT RIGHT]")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	check(err)
	check(json.Unmarshal(data, &snap))
	text, err := os.ReadFile(os.Args[2])
	check(err)
	funcs := template.FuncMap{
		"key": kv(func(s string) string { return snap.KV[s] }),
		"keyOrDefault": func(s, d string) (string, error) {
			s, err := kvPath(s)
			if v := snap.KV[s]; v != "" {
				return v, err
			}
			return d, err
		},
		"keyExists": func(s string) (bool, error) {
			s, err := kvPath(s)
			_, ok := snap.KV[s]
			return ok, err
		},
		"ls":              kvList(ls),
		"tree":            kvList(tree),
		"service":         service,
		"connect":         connect,
		"services":        services,
		"node":            node,
		"nodes":           nodes,
		"datacenters":     func() []string { return snap.Datacenters },
		"caRoots":         func() []*CARoot { return snap.CARoots.Roots },
		"caLeaf":          func(s string) *LeafCert { return snap.CALeaf[s] },
		"secret":          secret,
		"executeTemplate": executeTemplate,
		"secrets":         secrets,
		"env":             os.Getenv,
		"mustEnv": func(s string) (string, error) {
			if v := os.Getenv(s); v != "" {
				return v, nil
			}
			return "", fmt.Errorf("required environment variable %s is empty", s)
		},
		"envOrDefault": func(s, d string) string {
			if v, ok := os.LookupEnv(s); ok {
				return v
			}
			return d
		},
		"toJSON": func(v interface{}) (string, error) {
			b, err := json.Marshal(v)
			return string(bytes.TrimSpace(b)), err
		},
		"toJSONPretty": func(v interface{}) (string, error) {
			b, err := json.MarshalIndent(v, "", "  ")
			return string(bytes.TrimSpace(b)), err
		},
		"parseJSON": func(s string) (interface{}, error) {
			if s == "" {
				return map[string]interface{}{}, nil
			}
			var v interface{}
			err := json.Unmarshal([]byte(s), &v)
			return v, err
		},
		"split": func(sep, s string) []string {
			s = strings.TrimSpace(s)
			if s == "" {
				return []string{}
			}
			return strings.Split(s, sep)
		},
		"join":         func(sep string, a []string) string { return strings.Join(a, sep) },
		"replaceAll":   func(f, t, s string) string { return strings.ReplaceAll(s, f, t) },
		"contains":     func(v, l interface{}) bool { return in(l, v) },
		"in":           in,
		"byTag":        byTag,
		"byKey":        byKey,
		"byMeta":       byMeta,
		"byPort":       byPort,
		"explode":      explode,
		"indent":       indent,
		"add":          arith("+"),
		"subtract":     arith("-"),
		"multiply":     arith("*"),
		"divide":       arith("/"),
		"modulo":       arith("%"),
		"base64Encode": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"base64Decode": func(s string) (string, error) {
			b, err := base64.StdEncoding.DecodeString(s)
			return string(b), err
		},
		"base64URLEncode": func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) },
		"base64URLDecode": func(s string) (string, error) {
			b, err := base64.URLEncoding.DecodeString(s)
			return string(b), err
		},
		"toUnescapedJSON":       func(v interface{}) (string, error) { return unescapedJSON(v, "") },
		"toUnescapedJSONPretty": func(v interface{}) (string, error) { return unescapedJSON(v, "  ") },
		"loop":                  loop,
		"trimPrefix":            func(p, s string) string { return strings.TrimPrefix(s, p) },
		"trimSuffix":            func(p, s string) string { return strings.TrimSuffix(s, p) },
		"trim":                  func(c, s string) string { return strings.Trim(s, c) },
		"splitToMap": func(sep1, sep2, s string) map[string]string {
			m := map[string]string{}
			s = strings.TrimSpace(s)
			if s == "" {
				return m
			}
			for _, item := range strings.Split(s, sep1) {
				if k, v, found := strings.Cut(item, sep2); found {
					m[k] = v
				}
			}
			return m
		},
		"sha256Hex": func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		},
		"md5sum": func(s string) string {
			sum := md5.Sum([]byte(s))
			return hex.EncodeToString(sum[:])
		},
		"parseBool": func(s string) (bool, error) {
			if s == "" {
				return false, nil
			}
			return strconv.ParseBool(s)
		},
		"parseInt": func(s string) (int64, error) {
			if s == "" {
				return 0, nil
			}
			return strconv.ParseInt(s, 10, 64)
		},
		"parseFloat": func(s string) (float64, error) {
			if s == "" {
				return 0, nil
			}
			return strconv.ParseFloat(s, 64)
		},
		"parseUint": func(s string) (uint64, error) {
			if s == "" {
				return 0, nil
			}
			return strconv.ParseUint(s, 10, 64)
		},
		"toLower":   strings.ToLower,
		"toUpper":   strings.ToUpper,
		"trimSpace": strings.TrimSpace,
	}
	tmpl := template.New(os.Args[2]).Funcs(funcs)
	if len(os.Args) == 5 {
		tmpl = tmpl.Delims(os.Args[3], os.Args[4])
	}
	tmpl, err = tmpl.Parse(string(text))
	root = tmpl
	check(err)
	check(tmpl.Execute(os.Stdout, nil))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctrender:", err)
		os.Exit(1)
	}
}
