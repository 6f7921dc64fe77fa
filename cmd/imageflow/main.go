// Command imageflow is the ImageFlowCanvas edge media server and its tools.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	iwebrtc "github.com/imageflowcanvas/imageflow/ingest/webrtc"
	"github.com/imageflowcanvas/imageflow/internal/memtrim"
	"github.com/imageflowcanvas/imageflow/server"
)

const usage = `imageflow — edge media server

Usage:
  imageflow serve [flags]              run the server (embedded NATS, REST, RTSP, WebRTC, gRPC)
  imageflow worker [flags]             run a processor-only node: batch work and shared live pipelines
  imageflow processor serve <name>     run one built-in processor as a gRPC service
  imageflow processor check <addr>     check a gRPC processor (any language) against the contract
  imageflow infer serve                run a KServe v2 (Triton protocol) inference server
  imageflow batch run|status|ls|cancel upload images through a pipeline and fetch the results
  imageflow pipeline try               run a pipeline once on a picture: each step's output and time
  imageflow openapi                    print the REST API's OpenAPI document
  imageflow help                       this text

Run "imageflow <command> -h" for the flags of a command.
`

// commands maps a subcommand to its entry point; more are added by the files
// that implement them.
var commands = map[string]func(ctx context.Context, args []string) error{
	"serve": serve,
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "help" || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprint(os.Stderr, usage)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	cmd, ok := commands[os.Args[1]]
	if os.Args[1] == "processor" && len(os.Args) > 2 && os.Args[2] == "check" {
		cmd = processorCheckCmd // check.go
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "imageflow: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "imageflow: %v\n", err)
		os.Exit(1)
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// loadConfig runs the configuration pipeline: defaults → --config file →
// IFC_* environment → flags → Validate.
func loadConfig(name string, args []string) (server.Config, error) {
	cfg := server.Defaults()
	// The file must be read before the flags override it, so find --config
	// first with a throwaway flag set.
	pre := flag.NewFlagSet(name, flag.ContinueOnError)
	pre.SetOutput(nopWriter{})
	configPath := pre.String("config", "", "")
	cfg.BindFlags(pre)
	_ = pre.Parse(args)
	if *configPath != "" {
		if err := cfg.LoadFile(*configPath); err != nil {
			return cfg, err
		}
	}
	if err := cfg.LoadEnv(os.LookupEnv); err != nil {
		return cfg, err
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("config", *configPath, "YAML configuration file")
	cfg.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return cfg, cfg.Validate()
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func serve(ctx context.Context, args []string) error {
	cfg, err := loadConfig("serve", args)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogLevel)
	srv := &server.Server{Config: cfg, Logger: logger}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	go trimAfterStartup(ctx, logger)
	err = srv.Wait(ctx)
	logger.Info("shutting down")
	if cerr := srv.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// startupSettle is how long after start-up the pages only start-up touched
// are given back: long enough for cameras, pipelines and the first garbage
// collections to have started, so what they use faults back in at once.
const startupSettle = 5 * time.Second

// Memory freed after a burst is given back when the process's private
// memory stands giveBackSlack above its low point, checked every
// giveBackEvery (see memtrim.GiveBackAfterBursts).
const (
	giveBackEvery = 10 * time.Second
	giveBackSlack = 16 << 20
)

// trimAfterStartup gives back, once, the memory start-up used and no longer
// needs, then what bursts of work leave behind (see package memtrim).
func trimAfterStartup(ctx context.Context, logger *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(startupSettle):
	}
	res, err := memtrim.Trim()
	if err != nil {
		logger.Debug("start-up memory not trimmed", "err", err)
		return
	}
	logger.Debug("start-up memory trimmed", "mappings", res.Mappings, "file_mib", res.FileBytes>>20)
	memtrim.GiveBackAfterBursts(ctx, giveBackEvery, giveBackSlack, iwebrtc.InBurst, func(before, after int64) {
		logger.Debug("freed memory given back", "from_mib", before>>20, "to_mib", after>>20)
	})
}
