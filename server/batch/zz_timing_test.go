package batch_test

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"
)

func BenchmarkZZPhases(b *testing.B) {
	img := fullHD(b)
	e := startEnv(b, envOpts{})
	c := newBenchClient(e.base, img)
	_ = c.one()
	var up, wait, dl time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		resp, _ := c.http.Post(c.base+"/api/v1/executions", c.ct, bytes.NewReader(c.body))
		var created struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&created)
		resp.Body.Close()
		t1 := time.Now()
		resp, _ = c.http.Get(c.base + "/api/v1/executions/" + created.ID + "/events")
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t2 := time.Now()
		resp, _ = c.http.Get(c.base + "/api/v1/executions/" + created.ID + "/files/0/image")
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t3 := time.Now()
		up += t1.Sub(t0)
		wait += t2.Sub(t1)
		dl += t3.Sub(t2)
	}
	n := time.Duration(b.N)
	b.Logf("upload %v wait %v download %v", up/n, wait/n, dl/n)
}
