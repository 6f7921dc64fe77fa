package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/imageflowcanvas/imageflow/processors"
	"github.com/imageflowcanvas/imageflow/processors/builtin"
	"github.com/imageflowcanvas/imageflow/processors/kserve"
	"github.com/imageflowcanvas/imageflow/processors/modelfiles"
	"github.com/imageflowcanvas/imageflow/processors/remote"
)

func init() {
	commands["processor"] = processorCmd
	commands["infer"] = inferCmd
}

// processorCmd: `imageflow processor serve <name>` runs one built-in
// processor as a standalone gRPC Processor service (one per K3s pod).
func processorCmd(ctx context.Context, args []string) error {
	if len(args) < 1 || args[0] != "serve" {
		return fmt.Errorf("usage: imageflow processor serve [--listen :50052] [--models DIR] <name>")
	}
	fs := flag.NewFlagSet("processor serve", flag.ContinueOnError)
	addr := fs.String("listen", ":50052", "gRPC address")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	models := fs.String("models", "", "the only directory model, class-list and cascade files are read from (none when empty)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	reg := processors.NewRegistry()
	builtin.Register(reg, builtin.WithModels(modelfiles.New(*models)))
	if fs.NArg() != 1 {
		names := ""
		for _, s := range reg.Specs() {
			names += " " + s.Name
		}
		return fmt.Errorf("name one processor:%s", names)
	}
	return remote.RunProcessorServer(ctx, *addr, fs.Arg(0), reg, newLogger(*level))
}

// inferCmd: `imageflow infer serve` runs a KServe v2 gRPC inference server
// (the protocol Triton speaks) for ONNX models on OpenCV DNN.
func inferCmd(ctx context.Context, args []string) error {
	if len(args) < 1 || args[0] != "serve" {
		return fmt.Errorf("usage: imageflow infer serve [--listen :8001] --models DIR")
	}
	fs := flag.NewFlagSet("infer serve", flag.ContinueOnError)
	addr := fs.String("listen", ":8001", "gRPC address (Triton's default gRPC port is 8001)")
	models := fs.String("models", "./models", "model repository: <dir>/<model>/1/model.onnx")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	return kserve.RunInferServer(ctx, *addr, *models, newLogger(*level))
}
