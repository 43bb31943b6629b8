// consul-template's Vault functions (secret, secrets) over the snapshot.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Secret is consul-template's dependency.Secret.
type Secret struct {
	RequestID     string
	LeaseID       string
	LeaseDuration int
	Renewable     bool
	Data          map[string]interface{}
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
