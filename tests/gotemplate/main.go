// ctrender renders a consul-template template with Go's own text/template, its functions served
// from a JSON snapshot of the same Consul and Vault data confsync reads (tests/test_convert_go.py).
//
// The functions follow consul-template's documented behaviour (template/funcs.go, dependency/*.go):
// written for these tests with the standard library only, so the build needs no module download.
//
// usage: ctrender SNAPSHOT.json TEMPLATE [LEFT RIGHT]
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
	"reflect"
	"regexp"
	"sort"
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

// Node is consul-template's dependency.Node.
type Node struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
}

// CatalogNodeService is consul-template's dependency.CatalogNodeService.
type CatalogNodeService struct {
	ID      string
	Service string
	Tags    []string
	Meta    map[string]string
	Port    int
	Address string
}

// CatalogNode is consul-template's dependency.CatalogNode.
type CatalogNode struct {
	Node     *Node
	Services []*CatalogNodeService
}

type catalogNode struct {
	Node     *Node
	Services map[string]*CatalogNodeService
}

// CARoot is Consul's api.CARoot, reduced to what templates read.
type CARoot struct {
	ID                string
	Name              string
	SerialNumber      uint64
	SigningKeyID      string
	RootCertPEM       string `json:"RootCert"`
	IntermediateCerts []string
	Active            bool
}

// LeafCert is Consul's api.LeafCert, reduced likewise.
type LeafCert struct {
	SerialNumber  string
	CertPEM       string
	PrivateKeyPEM string
	Service       string
	ServiceURI    string
}

// HealthCheck is Consul's api.HealthCheck, reduced to what templates read.
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
}

// ServiceAddress is Consul's api.ServiceAddress.
type ServiceAddress struct {
	Address string
	Port    int
}

// AgentWeights is Consul's api.AgentWeights.
type AgentWeights struct {
	Passing int
	Warning int
}

type healthEntry struct {
	Node    Node
	Service struct {
		ID              string
		Service         string
		Tags            []string
		Address         string
		Port            int
		Meta            map[string]string
		Weights         AgentWeights
		TaggedAddresses map[string]ServiceAddress
	}
	Checks []*HealthCheck
}

// KeyPair is consul-template's dependency.KeyPair, reduced to what templates read.
type KeyPair struct {
	Path  string
	Key   string
	Value string
}

// HealthService is consul-template's dependency.HealthService, reduced likewise.
type HealthService struct {
	Node                   string
	NodeID                 string
	NodeAddress            string
	NodeDatacenter         string
	NodeTaggedAddresses    map[string]string
	NodeMeta               map[string]string
	Address                string
	ID                     string
	Name                   string
	Tags                   []string
	Port                   int
	ServiceMeta            map[string]string
	Status                 string
	Weights                AgentWeights
	Checks                 []*HealthCheck
	ServiceTaggedAddresses map[string]ServiceAddress
}

// CatalogSnippet is consul-template's dependency.CatalogSnippet.
type CatalogSnippet struct {
	Name string
	Tags []string
}

// Secret is consul-template's dependency.Secret.
type Secret struct {
	RequestID     string
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Data          map[string]interface{}
}

var snap snapshot

func list(prefix string) []*KeyPair {
	var keys []string
	for k := range snap.KV {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var pairs []*KeyPair
	for _, k := range keys {
		rel := strings.TrimLeft(strings.TrimPrefix(k, prefix), "/")
		pairs = append(pairs, &KeyPair{Path: k, Key: rel, Value: snap.KV[k]})
	}
	return pairs
}

func tree(prefix string) []*KeyPair {
	result := []*KeyPair{}
	for _, p := range list(prefix) {
		parts := strings.Split(p.Key, "/")
		if parts[len(parts)-1] != "" {
			result = append(result, p)
		}
	}
	return result
}

func ls(prefix string) []*KeyPair {
	result := []*KeyPair{}
	for _, p := range list(prefix) {
		if p.Key != "" && !strings.Contains(p.Key, "/") {
			result = append(result, p)
		}
	}
	return result
}

func status(e healthEntry) string {
	worst := "passing"
	for _, c := range e.Checks {
		if strings.HasPrefix(c.CheckID, "_service_maintenance") || strings.HasPrefix(c.CheckID, "_node_maintenance") {
			return "maintenance"
		}
		if c.Status == "critical" || (c.Status == "warning" && worst == "passing") {
			worst = c.Status
		}
	}
	return worst
}

// dc takes the datacenter off a query ("x@dc"): the fixture's only datacenter is dc1.
func dc(query string) (string, error) {
	if i := strings.Index(query, "@"); i >= 0 {
		if query[i+1:] != "dc1" {
			return "", fmt.Errorf("no path to datacenter %q", query[i+1:])
		}
		return query[:i], nil
	}
	return query, nil
}

// kvPath is keyRe and prefixRe (dependency.go): one leading "/" is not part of the key, nor "@dc".
func kvPath(p string) (string, error) {
	return dc(strings.TrimPrefix(p, "/"))
}

func kv(f func(string) string) func(string) (string, error) {
	return func(p string) (string, error) {
		p, err := kvPath(p)
		return f(p), err
	}
}

func kvList(f func(string) []*KeyPair) func(string) ([]*KeyPair, error) {
	return func(p string) ([]*KeyPair, error) {
		p, err := kvPath(p)
		return f(p), err
	}
}

// cutNear takes "~node" off a query: with it, consul-template keeps Consul's order (by distance).
func cutNear(query string) (string, string) {
	query, near, _ := strings.Cut(query, "~")
	return query, near
}

func nodes(args ...string) ([]*Node, error) {
	query, near := cutNear(strings.Join(args, ""))
	if _, err := dc(query); err != nil {
		return nil, err
	}
	if near != "" {
		return snap.NodesNear[near], nil
	}
	result := append([]*Node{}, snap.Nodes...)
	sort.SliceStable(result, func(i, j int) bool {
		if result[i].Node != result[j].Node {
			return result[i].Node < result[j].Node
		}
		return result[i].Address < result[j].Address
	})
	return result, nil
}

func node(args ...string) (*CatalogNode, error) {
	name, err := dc(strings.Join(args, ""))
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = snap.AgentNode
	}
	found, ok := snap.Node[name]
	if !ok {
		return &CatalogNode{}, nil // catalog_node.go: an unknown node is an empty CatalogNode
	}
	result := &CatalogNode{Node: found.Node}
	for _, s := range found.Services {
		t := append([]string{}, s.Tags...)
		sort.Strings(t)
		c := *s
		c.Tags = t
		result.Services = append(result.Services, &c)
	}
	sort.SliceStable(result.Services, func(i, j int) bool {
		a, b := result.Services[i], result.Services[j]
		if a.Service == b.Service {
			return a.ID <= b.ID
		}
		return a.Service <= b.Service
	})
	return result, nil
}

func service(args ...string) ([]*HealthService, error) {
	return healthService(snap.Health, args)
}

func connect(args ...string) ([]*HealthService, error) {
	return healthService(snap.Connect, args)
}

func healthService(entries map[string][]healthEntry, args []string) ([]*HealthService, error) {
	query := strings.Join(args, "|")
	name, filter, _ := strings.Cut(query, "|")
	tag := ""
	if i := strings.Index(name, "."); i >= 0 {
		tag, name = name[:i], name[i+1:]
	}
	name, near := cutNear(name)
	name, err := dc(name)
	if err != nil {
		return nil, err
	}
	if near != "" {
		entries = map[string][]healthEntry{name: snap.HealthNear[name+"~"+near]}
	}
	// health_service.go: a comma-separated set of states, "any" accepting all; none means passing
	accept := map[string]bool{}
	for _, f := range strings.Split(filter, ",") {
		if f = strings.TrimSpace(f); f != "" {
			accept[f] = true
		}
	}
	if len(accept) == 0 {
		accept["passing"] = true
	}
	result := []*HealthService{}
	for _, e := range entries[name] {
		st := status(e)
		if !accept["any"] && !accept[st] {
			continue
		}
		if tag != "" && !contains(tag, e.Service.Tags) {
			continue
		}
		address := e.Service.Address
		if address == "" {
			address = e.Node.Address
		}
		tags := append([]string{}, e.Service.Tags...)
		sort.Strings(tags)
		result = append(result, &HealthService{Node: e.Node.Node, NodeID: e.Node.ID, NodeAddress: e.Node.Address,
			NodeDatacenter: e.Node.Datacenter, NodeTaggedAddresses: e.Node.TaggedAddresses, NodeMeta: e.Node.Meta,
			Address: address, ID: e.Service.ID, Name: e.Service.Service, Tags: tags, Port: e.Service.Port,
			ServiceMeta: e.Service.Meta, Status: st, Weights: e.Service.Weights, Checks: e.Checks,
			ServiceTaggedAddresses: e.Service.TaggedAddresses})
	}
	if near != "" {
		return result, nil
	}
	sort.SliceStable(result, func(i, j int) bool {
		if result[i].Node != result[j].Node {
			return result[i].Node < result[j].Node
		}
		return result[i].ID < result[j].ID
	})
	return result, nil
}

func contains(s string, list []string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func services(args ...string) ([]*CatalogSnippet, error) {
	if _, err := dc(strings.Join(args, "")); err != nil {
		return nil, err
	}
	var result []*CatalogSnippet
	for name, tags := range snap.Catalog {
		t := append([]string{}, tags...)
		sort.Strings(t)
		result = append(result, &CatalogSnippet{Name: name, Tags: t})
	}
	sort.Slice(result, func(i, j int) bool { return result[i].Name < result[j].Name })
	return result, nil
}

// vaultPath is NewVaultReadQuery's and NewVaultListQuery's trimming (vault_read.go, vault_list.go).
func vaultPath(p string) (string, error) {
	p = strings.Trim(strings.TrimSpace(p), "/")
	if p == "" {
		return "", fmt.Errorf("vault: invalid format: %q", p)
	}
	return p, nil
}

// secrets is consul-template's secretsFunc over the LIST replies in the snapshot: sorted names, a
// sub-folder's ending with "/", a path with nothing under it an empty (nil) list.
func secrets(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	p, err := vaultPath(p)
	if err != nil {
		return nil, err
	}
	names, ok := snap.Lists[p]
	if !ok {
		return nil, fmt.Errorf("no list %q in the snapshot", p)
	}
	result := append([]string(nil), names...)
	sort.Strings(result)
	return result, nil
}

func secret(path string, rest ...string) (*Secret, error) {
	path, err := vaultPath(path)
	if err != nil {
		return nil, err
	}
	params := []string{}
	for _, p := range rest {
		if p == "" {
			continue
		}
		k, v, _ := strings.Cut(p, "=")
		params = append(params, strings.TrimSpace(k)+"="+strings.TrimSpace(v))
	}
	sort.Strings(params)
	key := path
	if len(params) > 0 {
		key += "?" + strings.Join(params, "&")
	}
	raw, ok := snap.Secrets[key]
	if !ok {
		return nil, fmt.Errorf("no secret %q in the snapshot", key)
	}
	var s Secret
	var body struct {
		RequestID     string                 `json:"request_id"`
		LeaseID       string                 `json:"lease_id"`
		LeaseDuration int                    `json:"lease_duration"`
		Renewable     bool                   `json:"renewable"`
		Data          map[string]interface{} `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // as Vault's API client decodes
	if err := dec.Decode(&body); err != nil {
		return nil, err
	}
	s.RequestID, s.LeaseID, s.LeaseDuration, s.Renewable, s.Data = body.RequestID, body.LeaseID,
		body.LeaseDuration, body.Renewable, body.Data
	return &s, nil
}

// byMeta follows consul-template's byMeta (funcs.go).
func byMeta(meta string, services []*HealthService) (map[string][]*HealthService, error) {
	re := regexp.MustCompile("[^a-zA-Z0-9_-]")
	get := func(m map[string]string, key string) string {
		name := strings.TrimSuffix(key, "|int")
		if v := m[name]; v != "" {
			return v
		}
		if strings.HasSuffix(key, "|int") {
			return "0"
		}
		return fmt.Sprintf("_no_%s_", name)
	}
	groups := map[string][]*HealthService{}
	for _, s := range services {
		var parts []string
		for _, key := range strings.Split(meta, ",") {
			value := get(s.ServiceMeta, key)
			if strings.HasSuffix(key, "|int") {
				i, err := strconv.Atoi(value)
				if err != nil {
					return nil, err
				}
				value = fmt.Sprintf("%05d", i)
			}
			parts = append(parts, re.ReplaceAllString(value, "_"))
		}
		k := strings.Join(parts, "_")
		groups[k] = append(groups[k], s)
	}
	return groups, nil
}

func byPort(in []*HealthService) map[int][]*HealthService {
	m := map[int][]*HealthService{}
	for _, s := range in {
		m[s.Port] = append(m[s.Port], s)
	}
	return m
}

func byTag(in []*HealthService) map[string][]*HealthService {
	m := map[string][]*HealthService{}
	for _, s := range in {
		for _, t := range s.Tags {
			m[t] = append(m[t], s)
		}
	}
	return m
}

func byKey(pairs []*KeyPair) map[string]map[string]*KeyPair {
	m := map[string]map[string]*KeyPair{}
	for _, p := range pairs {
		parts := strings.Split(p.Key, "/")
		top, key := parts[0], strings.Join(parts[1:], "/")
		if key == "" {
			continue
		}
		if m[top] == nil {
			m[top] = map[string]*KeyPair{}
		}
		n := *p
		n.Key = key
		m[top][key] = &n
	}
	return m
}

func explodeInto(m map[string]interface{}, k string, v interface{}, p string) error {
	if strings.Contains(k, "/") {
		parts := strings.Split(k, "/")
		top, rest := parts[0], strings.Join(parts[1:], "/")
		if _, ok := m[top]; !ok {
			m[top] = map[string]interface{}{}
		}
		nest, ok := m[top].(map[string]interface{})
		if !ok {
			return fmt.Errorf("not a map: %q: %q already has value %q", p, top, m[top])
		}
		return explodeInto(nest, rest, v, k)
	}
	if k != "" {
		m[k] = v
	}
	return nil
}

func explode(pairs []*KeyPair) (map[string]interface{}, error) {
	m := map[string]interface{}{}
	for _, p := range pairs {
		if err := explodeInto(m, p.Key, p.Value, p.Key); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func in(l, v interface{}) bool {
	lv := reflect.ValueOf(l)
	switch lv.Kind() {
	case reflect.Slice:
		for i := 0; i < lv.Len(); i++ {
			if reflect.DeepEqual(lv.Index(i).Interface(), v) {
				return true
			}
		}
	case reflect.String:
		if s, ok := v.(string); ok {
			return strings.Contains(lv.String(), s)
		}
	}
	return false
}

func indent(spaces int, s string) (string, error) {
	if spaces < 0 {
		return "", fmt.Errorf("indent value must be a positive integer")
	}
	var out []byte
	prefix := []byte(strings.Repeat(" ", spaces))
	start := true
	for _, c := range []byte(s) {
		if start && c != '\n' {
			out = append(out, prefix...)
		}
		out = append(out, c)
		start = c == '\n'
	}
	return string(out), nil
}

// toInt64 is the integer half of consul-template's reflection on arithmetic and loop arguments
// (funcs.go add, loop): any int or uint kind (a literal, len, parseInt's int64, parseUint's uint64).
func toInt64(v interface{}) (int64, error) {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int(), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return int64(rv.Uint()), nil
	}
	return 0, fmt.Errorf("not an integer: %T", v)
}

func arith(op string) func(bv, av interface{}) (int64, error) {
	return func(bv, av interface{}) (int64, error) {
		a, err := toInt64(av)
		if err != nil {
			return 0, err
		}
		b, err := toInt64(bv)
		if err != nil {
			return 0, err
		}
		switch op {
		case "+":
			return a + b, nil
		case "-":
			return a - b, nil
		case "*":
			return a * b, nil
		case "/":
			return a / b, nil
		}
		return a % b, nil
	}
}

func unescapedJSON(v interface{}, indent string) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimRight(buf.String(), "\r\n"), nil
}

func loop(args ...interface{}) (<-chan int64, error) {
	var bounds []int64
	for _, a := range args {
		n, err := toInt64(a)
		if err != nil {
			return nil, err
		}
		bounds = append(bounds, n)
	}
	var start, stop int64
	switch len(bounds) {
	case 1:
		stop = bounds[0]
	case 2:
		start, stop = bounds[0], bounds[1]
	default:
		return nil, fmt.Errorf("loop: wrong number of arguments")
	}
	ch := make(chan int64)
	go func() {
		for i := start; i < stop; i++ {
			ch <- i
		}
		close(ch)
	}()
	return ch, nil
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
		"ls":          kvList(ls),
		"tree":        kvList(tree),
		"service":     service,
		"connect":     connect,
		"services":    services,
		"node":        node,
		"nodes":       nodes,
		"datacenters": func() []string { return snap.Datacenters },
		"caRoots":     func() []*CARoot { return snap.CARoots.Roots },
		"caLeaf":      func(s string) *LeafCert { return snap.CALeaf[s] },
		"secret":      secret,
		"secrets":     secrets,
		"env":         os.Getenv,
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
	check(err)
	check(tmpl.Execute(os.Stdout, nil))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctrender:", err)
		os.Exit(1)
	}
}
