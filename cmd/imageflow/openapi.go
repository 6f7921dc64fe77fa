package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/imageflowcanvas/imageflow/server"
)

func init() { commands["openapi"] = printOpenAPI }

// printOpenAPI writes the API's OpenAPI document (as a server with tokens
// on serves it) to stdout without starting a server; the web UI's build
// generates its client from it.
func printOpenAPI(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("openapi", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: imageflow openapi\n\nPrints the OpenAPI document of the REST API (GET /api/v1/openapi.json) as JSON.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("openapi: unexpected argument %q", fs.Arg(0))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(server.OpenAPIDocument(server.Defaults()))
}
