package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/imageflowcanvas/imageflow/processors/conformance"
)

// processorCheckCmd: `imageflow processor check grpc://host:port` runs the
// conformance checks against a processor, prints the table and fails naming
// the checks that did not pass.
func processorCheckCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("processor check", flag.ContinueOnError)
	imagePath := fs.String("image", conformance.DefaultImagePath, "JPEG or PNG sent in every call (a synthetic picture when the file is missing)")
	params := fs.String("params", "", `step parameters as a JSON object, sent with every good call (e.g. '{"model":"/models/yolo.onnx"}')`)
	parallel := fs.Int("parallel", 8, "calls in flight in the concurrency check")
	rounds := fs.Int("rounds", 4, "calls each of them makes")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of one good call")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: imageflow processor check [flags] grpc://host:port")
	}
	opts := conformance.Options{Target: fs.Arg(0), Parallel: *parallel, Rounds: *rounds, Timeout: *timeout}
	if b, err := os.ReadFile(*imagePath); err == nil {
		opts.Image = b
	} else if *imagePath != conformance.DefaultImagePath {
		return err
	}
	if *params != "" {
		if err := json.Unmarshal([]byte(*params), &opts.Params); err != nil {
			return fmt.Errorf("--params: %w", err)
		}
	}
	rep, err := conformance.Run(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("processor %q at %s\n", rep.Processor, opts.Target)
	rep.WriteTable(os.Stdout)
	if failed := rep.Failed(); len(failed) > 0 {
		return fmt.Errorf("processor check failed: %s", strings.Join(failed, ", "))
	}
	fmt.Println("all checks passed")
	return nil
}
