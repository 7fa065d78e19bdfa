package report_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/report"
)

// queueFixture is an asynq queue of its own on the test Redis, deleted at
// the end of the test.
type queueFixture struct {
	name   string
	client *asynq.Client
	insp   *asynq.Inspector
}

func newQueueFixture(t *testing.T) *queueFixture {
	t.Helper()
	opt := asynq.RedisClientOpt{Addr: redistest.Addr()}
	q := &queueFixture{name: "report-test-" + redistest.RandomPrefix(), client: asynq.NewClient(opt), insp: asynq.NewInspector(opt)}
	t.Cleanup(func() {
		rdb := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
		redistest.DeleteQueue(t, rdb, q.name)
		_ = rdb.Close()
		_ = q.insp.Close()
		_ = q.client.Close()
	})
	return q
}

// schedule adds a task due in an hour and returns its id.
func (q *queueFixture) schedule(t *testing.T) string {
	t.Helper()
	info, err := q.client.Enqueue(asynq.NewTask("report:test", []byte(`{}`)), asynq.Queue(q.name), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

func (q *queueFixture) exists(t *testing.T, id string) bool {
	t.Helper()
	_, err := q.insp.GetTaskInfo(q.name, id)
	return err == nil
}

// deleteTask asks /queues' API (asynqmon's path) to delete a scheduled task
// with the given headers and returns the status.
func deleteTask(t *testing.T, base, queue, id string, header ...string) int {
	t.Helper()
	code, _, _ := send(t, http.MethodDelete, base+"/queues/api/queues/"+queue+"/scheduled_tasks/"+id, header...)
	return code
}

// By default no one can change a task through /queues: whoever reads the
// reports sees the queues, read-only.
func TestQueuesReadOnlyByDefault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := newQueueFixture(t)
	queues := asynq.RedisClientOpt{Addr: redistest.Addr()}
	for _, cfg := range []report.ServerConfig{
		{Token: testToken, Queues: queues},
		{BasicUser: testUser, BasicPassword: testPassword, Queues: queues},
		{Queues: queues}, // no auth, on loopback
	} {
		_, ts := b.server(t, cfg)
		cred := bearer(testToken)
		if cfg.Token == "" {
			cred = basic(testUser, testPassword)
		}
		if cfg.Token == "" && cfg.BasicUser == "" {
			cred = nil
		}
		id := q.schedule(t)
		if code := deleteTask(t, ts.URL, q.name, id, cred...); code != http.StatusMethodNotAllowed || !q.exists(t, id) {
			t.Errorf("%s: DELETE a scheduled task = %d (task still there: %v), want 405 and the task kept", authName(cfg), code, q.exists(t, id))
		}
		code, _, body := get(t, ts.URL+"/queues/", cred...)
		if code != http.StatusOK || !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
			t.Errorf("%s: GET /queues/ = %d, want asynqmon's read-only page", authName(cfg), code)
		}
	}
}

func authName(cfg report.ServerConfig) string {
	switch {
	case cfg.Token != "":
		return "reader token"
	case cfg.BasicUser != "":
		return "reader basic auth"
	}
	return "no auth"
}

const (
	testAdminToken    = "admin-token-0123456789abcdef"
	testAdminUser     = "root"
	testAdminPassword = "admin horse battery staple"
)

// Changing tasks takes the admin role: an admin token, admin basic auth or
// a session signed in with the admin token. A reader's credential of any
// kind keeps /queues read-only, and -queues-read-only keeps it read-only
// for admins too.
func TestQueuesWritableOnlyForAdmins(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := newQueueFixture(t)
	queues := asynq.RedisClientOpt{Addr: redistest.Addr()}
	cfg := report.ServerConfig{Token: testToken, BasicUser: testUser, BasicPassword: testPassword,
		AdminToken: testAdminToken, AdminBasicUser: testAdminUser, AdminBasicPassword: testAdminPassword, Queues: queues}
	_, ts := b.server(t, cfg)
	readerSession := signIn(t, ts.URL, testToken)
	adminSession := signIn(t, ts.URL, testAdminToken)

	for name, cred := range map[string][]string{
		"reader token":   bearer(testToken),
		"reader basic":   basic(testUser, testPassword),
		"reader session": sessionCookie(readerSession),
	} {
		id := q.schedule(t)
		if code := deleteTask(t, ts.URL, q.name, id, cred...); code != http.StatusMethodNotAllowed || !q.exists(t, id) {
			t.Errorf("%s: DELETE a scheduled task = %d, want 405 and the task kept", name, code)
		}
		if code, _, body := get(t, ts.URL+"/queues/", cred...); code != http.StatusOK || !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
			t.Errorf("%s: GET /queues/ = %d, want the read-only page", name, code)
		}
		if code, _, body := get(t, ts.URL+"/api/session", cred...); code != http.StatusOK || !strings.Contains(body, `"role":"reader"`) || !strings.Contains(body, `"queues":"read-only"`) {
			t.Errorf("%s: GET /api/session = %d %s, want role reader, queues read-only", name, code, body)
		}
	}
	for name, cred := range map[string][]string{
		"admin token":   bearer(testAdminToken),
		"admin basic":   basic(testAdminUser, testAdminPassword),
		"admin session": sessionCookie(adminSession),
	} {
		id := q.schedule(t)
		if code := deleteTask(t, ts.URL, q.name, id, cred...); code != http.StatusNoContent || q.exists(t, id) {
			t.Errorf("%s: DELETE a scheduled task = %d, want 204 and the task gone", name, code)
		}
		if code, _, body := get(t, ts.URL+"/queues/", cred...); code != http.StatusOK || !strings.Contains(body, `window.FLAG_READ_ONLY="false"`) {
			t.Errorf("%s: GET /queues/ = %d, want the writable page", name, code)
		}
		if code, _, body := get(t, ts.URL+"/api/session", cred...); code != http.StatusOK || !strings.Contains(body, `"role":"admin"`) || !strings.Contains(body, `"queues":"writable"`) {
			t.Errorf("%s: GET /api/session = %d %s, want role admin, queues writable", name, code, body)
		}
		// An admin reads the reports too.
		if code, _, _ := get(t, ts.URL+"/api/metrics", cred...); code != http.StatusOK {
			t.Errorf("%s: GET /api/metrics = %d", name, code)
		}
	}
	// A wrong admin credential is no credential.
	for _, cred := range [][]string{bearer(testAdminToken + "x"), basic(testAdminUser, testPassword), basic(testUser, testAdminPassword)} {
		if code := deleteTask(t, ts.URL, q.name, q.schedule(t), cred...); code != http.StatusUnauthorized {
			t.Errorf("%q: DELETE = %d, want 401", cred, code)
		}
	}

	// -queues-read-only: not even an admin.
	cfg.QueuesReadOnly = true
	_, ro := b.server(t, cfg)
	id := q.schedule(t)
	if code := deleteTask(t, ro.URL, q.name, id, bearer(testAdminToken)...); code != http.StatusMethodNotAllowed || !q.exists(t, id) {
		t.Errorf("QueuesReadOnly, admin token: DELETE = %d, want 405 and the task kept", code)
	}
	if code, _, body := get(t, ro.URL+"/api/session", bearer(testAdminToken)...); code != http.StatusOK || !strings.Contains(body, `"role":"admin"`) || !strings.Contains(body, `"queues":"read-only"`) {
		t.Errorf("QueuesReadOnly: GET /api/session = %d %s, want role admin, queues read-only", code, body)
	}
}

func TestAdminCredentialsChecked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, cfg := range []report.ServerConfig{
		{AdminToken: "short"},
		{Token: testToken, AdminToken: testToken},
		{AdminBasicUser: "a:b", AdminBasicPassword: testAdminPassword},
		{AdminBasicUser: testAdminUser, AdminBasicPassword: "short"},
		{AdminBasicPassword: testAdminPassword},
		{BasicUser: testUser, BasicPassword: testPassword, AdminBasicUser: testUser, AdminBasicPassword: testAdminPassword},
	} {
		if srv, err := report.NewServer(b.store, cfg); err == nil {
			_ = srv.Close()
			t.Errorf("NewServer(%+v) accepted", cfg)
		}
	}
	// An admin credential alone is auth enough for a public address.
	srv, err := report.NewServer(b.store, report.ServerConfig{Addr: "0.0.0.0:8090", AdminToken: testAdminToken})
	if err != nil {
		t.Errorf("NewServer with only an admin token: %v", err)
	} else {
		_ = srv.Close()
	}
}

// signIn posts token to /login and returns the session cookie's value.
func signIn(t *testing.T, base, token string) string {
	t.Helper()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.PostForm(base+"/login", map[string][]string{"token": {token}, "next": {"/"}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	for _, c := range res.Cookies() {
		if c.Name == "nudge_report_session" && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("sign-in = %d without a session cookie", res.StatusCode)
	return ""
}

func sessionCookie(v string) []string { return []string{"Cookie", "nudge_report_session=" + v} }
