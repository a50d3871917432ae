// go_parse_oracle reads a JSON list of strings on stdin and prints, for each, what Go's strconv.ParseInt(s, 0, 64)
// (how hcl v1 reads a string into an int field) and time.ParseDuration(s) (how SPIRE reads its TTL and interval
// settings) make of it. Test oracle for trustroot.spire_tpm's go_parse_int / go_duration_seconds.
package main

import (
	"encoding/json"
	"os"
	"strconv"
	"time"
)

type result struct {
	Int      *int64   `json:"int"`
	Duration *float64 `json:"duration"`
}

func main() {
	var inputs []string
	if err := json.NewDecoder(os.Stdin).Decode(&inputs); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(2)
	}
	out := make([]result, len(inputs))
	for i, s := range inputs {
		if v, err := strconv.ParseInt(s, 0, 64); err == nil {
			out[i].Int = &v
		}
		if d, err := time.ParseDuration(s); err == nil {
			secs := d.Seconds()
			out[i].Duration = &secs
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
