package loadgen

// The simulated population: users, their devices and apps, conversations
// and their members, and the set-up events that register them.

import (
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/event"
)

type user struct {
	id       string
	app      string
	locale   string
	devices  []device
	presence []string // device ids presence events name
	online   uint8    // bit i: presence[i] is online
}

type device struct {
	platform string
	token    string
}

type conv struct {
	id          string
	app         string
	group       bool
	members     []int32  // user indexes, ascending: the most active first
	pendingRead []uint64 // per member: task seq of its pending read, 0 if none
	last        string   // the newest message's id
}

func (g *Generator) drawUsers() {
	cfg := &g.cfg
	g.users = make([]user, cfg.Users)
	for i := range g.users {
		u := &g.users[i]
		u.id = "u" + strconv.Itoa(i)
		u.app = cfg.Apps[i%len(cfg.Apps)]
		u.locale = locales[g.r.IntN(len(locales))]
		if g.r.Float64() < cfg.DeviceFraction {
			n := 1 + g.r.IntN(3)
			for k := range n {
				platform := event.PlatformFCM
				if g.r.Float64() < cfg.APNsFraction {
					platform = event.PlatformAPNs
				}
				u.devices = append(u.devices, device{platform: platform, token: g.token(platform)})
				u.presence = append(u.presence, u.id+"-"+platform+strconv.Itoa(k+1))
			}
			g.withDevices = append(g.withDevices, int32(i))
		} else {
			u.presence = []string{u.id + "-web"}
		}
	}
}

// drawConversations draws the conversations and their members, and returns
// each user's conversations.
func (g *Generator) drawConversations() [][]int32 {
	cfg := &g.cfg
	apps := len(cfg.Apps)
	g.convs = make([]conv, cfg.Conversations)
	userConvs := make([][]int32, cfg.Users)
	taken := make([]bool, cfg.Users)
	for i := range g.convs {
		c := &g.convs[i]
		app := i % apps
		c.app = cfg.Apps[app]
		c.group = g.r.Float64() < cfg.GroupFraction
		size := 2
		if c.group {
			c.id = "g" + strconv.Itoa(i)
			if g.r.Float64() < cfg.LargeGroupFraction {
				size = cfg.LargeGroupSize
			} else {
				// Log-uniform: as many groups of 3 to 6 as of 25 to 50.
				lo, hi := float64(cfg.GroupSizeMin), float64(cfg.GroupSizeMax+1)
				size = min(int(lo*math.Pow(hi/lo, g.r.Float64())), cfg.GroupSizeMax)
			}
		} else {
			c.id = "d" + strconv.Itoa(i)
		}
		size = min(size, g.usersIn(app))
		c.members = g.drawMembers(app, size, taken)
		c.pendingRead = make([]uint64, len(c.members))
		for _, m := range c.members {
			userConvs[m] = append(userConvs[m], int32(i))
		}
	}
	return userConvs
}

// drawMembers draws size distinct users of an app, half of the draws skewed
// towards active users, and returns them in ascending order. taken is
// scratch space, all false, left all false.
func (g *Generator) drawMembers(app, size int, taken []bool) []int32 {
	apps, n := len(g.cfg.Apps), g.usersIn(app)
	members := make([]int32, 0, size)
	if 2*size > n {
		for _, k := range g.r.Perm(n)[:size] {
			members = append(members, int32(k*apps+app))
		}
	} else {
		for len(members) < size {
			var u int
			if g.r.IntN(2) == 0 {
				u = g.activeUserIn(app)
			} else {
				u = g.r.IntN(n)*apps + app
			}
			if !taken[u] {
				taken[u] = true
				members = append(members, int32(u))
			}
		}
		for _, m := range members {
			taken[m] = false
		}
	}
	slices.Sort(members)
	return members
}

// usersIn returns the number of users of the app at index app.
func (g *Generator) usersIn(app int) int {
	apps := len(g.cfg.Apps)
	return (g.cfg.Users - app + apps - 1) / apps
}

// activeUserIn draws a user of an app, skewed towards active users.
func (g *Generator) activeUserIn(app int) int {
	apps := len(g.cfg.Apps)
	u := int(g.userZipf.Uint64())
	u += app - u%apps
	if u >= g.cfg.Users {
		u -= apps
	}
	return u
}

func (g *Generator) drawSetup(userConvs [][]int32) {
	for i := range g.users {
		u := &g.users[i]
		for _, d := range u.devices {
			g.setup = append(g.setup, &event.Event{V: event.Version, Type: event.TypeDeviceRegistered, App: u.app,
				User: u.id, Platform: d.platform, Token: d.token, Locale: u.locale})
		}
		var prefs *event.Event
		if g.r.Float64() < g.cfg.PrefsFraction {
			prefs = g.prefs(u, userConvs[i])
		}
		if g.cfg.ReminderDelay > 0 {
			if prefs == nil {
				prefs = &event.Event{V: event.Version, Type: event.TypePrefs, App: u.app, User: u.id}
			}
			d := max(1, int64(g.cfg.ReminderDelay/time.Second))
			prefs.ReminderDelayS = &d
		}
		if prefs != nil {
			g.setup = append(g.setup, prefs)
		}
	}
}

// prefs draws the preferences of a user who sets some.
func (g *Generator) prefs(u *user, convs []int32) *event.Event {
	e := &event.Event{V: event.Version, Type: event.TypePrefs, App: u.app, User: u.id}
	if g.r.Float64() < 0.7 {
		tz := timeZones[g.r.IntN(len(timeZones))]
		e.TimeZone = &tz
	}
	if g.r.Float64() < 0.5 {
		q := quietHours[g.r.IntN(len(quietHours))]
		e.QuietHours = &q
	}
	if g.r.Float64() < 0.3 {
		d := reminderDelays[g.r.IntN(len(reminderDelays))]
		e.ReminderDelayS = &d
	}
	if len(convs) > 0 && g.r.Float64() < 0.6 {
		e.Conversations = map[string]string{}
		for range 1 + g.r.IntN(min(3, len(convs))) {
			mode := event.ModeMentions
			switch x := g.r.Float64(); {
			case x < 0.4:
				mode = event.ModeMuted
			case x > 0.9:
				mode = event.ModeAll
			}
			e.Conversations[g.convs[convs[g.r.IntN(len(convs))]].id] = mode
		}
	}
	if e.TimeZone == nil && e.QuietHours == nil && e.ReminderDelayS == nil && e.Conversations == nil {
		tz := ""
		e.TimeZone = &tz
	}
	return e
}
