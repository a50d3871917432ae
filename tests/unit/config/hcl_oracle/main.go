// hcl_oracle decodes an HCL file with hashicorp/hcl v1 — the library SPIRE's hcl.Decode is — and prints JSON.
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
	data, err := ioutil.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var out map[string]interface{}
	if err := hcl.Decode(&out, string(data)); err != nil {
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
