// consul-template's functions that only compute (in, indent, arithmetic, JSON, loop).

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

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
