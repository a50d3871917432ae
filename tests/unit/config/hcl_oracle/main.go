// hcl_oracle decodes an HCL file with hashicorp/hcl v1 — the library behind SPIRE's hcl.Decode — and prints JSON.
// With -expandEnv it first expands $VAR/${VAR} the way SPIRE's -expandEnv does (os.Expand, "$$" stays "$").
// Test oracle for trustroot.spire_tpm's HCL renderer (built from Debian's golang-github-hashicorp-hcl-dev).
package main

import (
	"encoding/json"
	"fmt"
	"io/ioutil"
	"os"

	"github.com/hashicorp/hcl"
)

func main() {
	args := os.Args[1:]
	expand := false
	if len(args) > 0 && args[0] == "-expandEnv" {
		expand = true
		args = args[1:]
	}
	data, err := ioutil.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	text := string(data)
	if expand {
		text = os.Expand(text, func(key string) string {
			if key == "$" {
				return "$"
			}
			return os.Getenv(key)
		})
	}
	var out map[string]interface{}
	if err := hcl.Decode(&out, text); err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
