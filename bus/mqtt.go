package bus

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// internalUser is the bus's own in-process connection.
const internalUser = "imageflow-internal"

// configureMQTT opens nats-server's MQTT listener. nats-server maps MQTT
// topics to subjects ('/' becomes '.'), so <prefix>.events.<camera> is the
// MQTT topic <prefix>/events/<camera>. One authenticator then decides every
// connection: the bus's own users as before, everyone else through MQTTAuth
// with permission to subscribe to events only.
func (b *Bus) configureMQTT(opts *server.Options, internalPass string) error {
	host, portStr, err := net.SplitHostPort(b.MQTTAddr)
	if err != nil {
		return fmt.Errorf("%w %q (mqtt): %v", ErrInvalidAddr, b.MQTTAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return fmt.Errorf("%w %q (mqtt): bad port", ErrInvalidAddr, b.MQTTAddr)
	}
	if port == 0 {
		// nats-server does not tell which port it picked; pick one first.
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return fmt.Errorf("mqtt: %w", err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
	}
	opts.MQTT.Host, opts.MQTT.Port = host, port
	b.mqttAddr = net.JoinHostPort(host, strconv.Itoa(port))
	auth := &busAuth{internalPass: internalPass, user: b.ClientUser, password: b.ClientPassword,
		eventsOnly: b.subjects.Events(">"), check: b.MQTTAuth}
	if b.ClientAddr == "" {
		auth.user, auth.password = "", ""
	}
	// The custom authenticator replaces the user list.
	opts.Users = nil
	opts.CustomClientAuthentication = auth
	return nil
}

// MQTTListenAddr is the MQTT listener's address, or "" when closed.
func (b *Bus) MQTTListenAddr() string {
	if b.ns == nil {
		return ""
	}
	return b.mqttAddr
}

type busAuth struct {
	internalPass   string
	user, password string
	eventsOnly     string
	check          func(user, password string) bool
}

// Check admits the bus's own users with every permission and other clients
// (MQTT) that check accepts with permission to read events only: they can
// neither publish on the bus nor read video, frames or results.
func (a *busAuth) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o.Username == internalUser && o.Password == a.internalPass ||
		a.user != "" && o.Username == a.user && o.Password == a.password {
		c.RegisterUser(&server.User{Username: o.Username})
		return true
	}
	if a.check != nil && !a.check(o.Username, o.Password) {
		return false
	}
	c.RegisterUser(&server.User{Username: "mqtt:" + o.Username, Permissions: &server.Permissions{
		Publish: &server.SubjectPermission{Deny: []string{">"}},
		// The root too: an MQTT "ifc/events/#" subscribes to the level itself
		// as well as below it, and one denied part refuses the whole request.
		Subscribe: &server.SubjectPermission{Allow: []string{a.eventsOnly, strings.TrimSuffix(a.eventsOnly, ".>")}},
	}})
	return true
}
