// consul-template's Consul functions (KV, catalog, Connect) over the snapshot.

package main

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

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
