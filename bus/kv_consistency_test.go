package bus

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestKVReadsOwnWrites: a value read right after an acknowledged write is
// that write, also with concurrent writers (executions are updated by many
// workers while clients read them).
func TestKVReadsOwnWrites(t *testing.T) {
	b := start(t, Config{DataDir: t.TempDir()})
	ctx := context.Background()
	kv := b.KV(BucketExecutions)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			key := fmt.Sprintf("k%d", w)
			rev, err := kv.Create(ctx, key, []byte("0"))
			if err != nil {
				errs <- err
				return
			}
			for i := 1; i <= 200; i++ {
				want := fmt.Sprint(i)
				if rev, err = kv.Update(ctx, key, []byte(want), rev); err != nil {
					errs <- err
					return
				}
				e, err := kv.Get(ctx, key)
				if err != nil {
					errs <- err
					return
				}
				if string(e.Value()) != want {
					errs <- fmt.Errorf("%s: read %q right after writing %q", key, e.Value(), want)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
