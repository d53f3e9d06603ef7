// Package pgcluster runs a real Postgres primary and a streaming standby
// (made with pg_basebackup -R) in a temporary directory, for the router's
// end-to-end tests and its offload benchmark. As root it runs them as the
// postgres user, since Postgres refuses to run as root.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configures a cluster.
type Options struct {
	// ApplyDelay is the standby's recovery_min_apply_delay: how far
	// behind it replays, so that lag is real and deterministic.
	ApplyDelay time.Duration
	// MaxConnections is the primary's max_connections (and the standby's,
	// which must be at least as many). If zero, Postgres' default, 100.
	MaxConnections int
}

// PasswordRole is a role that logs in only with PasswordRolePassword over
// TCP (scram-sha-256); every other role is trusted. The tests use it for
// what a wrong password does.
const (
	PasswordRole         = "router_auth"
	PasswordRolePassword = "right-password"
)

// Cluster is a running primary and standby.
type Cluster struct {
	Dir                      string
	PrimaryURL, StandbyURL   string
	PrimaryPort, StandbyPort int
	// PrimaryLog and StandbyLog are the servers' log files.
	PrimaryLog, StandbyLog string

	bin              string
	runAs            []string
	primary, standby string // data directories
}

// Installed reports whether Postgres' server binaries are on this machine.
func Installed() bool {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	return len(bins) > 0
}

// Start makes and starts a cluster. The primary has pg_stat_statements
// loaded, and PasswordRole.
func Start(o Options) (*Cluster, error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		return nil, errors.New("PostgreSQL is not installed (Debian's postgresql package)")
	}
	sort.Strings(bins)
	c := &Cluster{bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "router-pg-")
	if err != nil {
		return nil, err
	}
	c.Dir = dir
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		c.runAs = []string{"runuser", "-u", "postgres", "--"}
	}
	if err := c.start(o); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(o Options) error {
	c.primary, c.standby = filepath.Join(c.Dir, "primary"), filepath.Join(c.Dir, "standby")
	c.PrimaryLog, c.StandbyLog = filepath.Join(c.Dir, "primary.log"), filepath.Join(c.Dir, "standby.log")
	var err error
	if c.PrimaryPort, err = freePort(); err != nil {
		return err
	}
	if c.StandbyPort, err = freePort(); err != nil {
		return err
	}
	maxConns := ""
	if o.MaxConnections > 0 {
		maxConns = fmt.Sprintf("max_connections = %d\n", o.MaxConnections)
	}
	if err := c.run("initdb", "-D", c.primary, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		return err
	}
	if err := c.appendFile(c.primary, "postgresql.conf", fmt.Sprintf(`port = %d
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
wal_level = replica
max_wal_senders = 4
fsync = off
full_page_writes = off
shared_preload_libraries = 'pg_stat_statements'
log_connections = on
%s`, c.PrimaryPort, c.Dir, maxConns)); err != nil {
		return err
	}
	// First match wins: the password role is checked, everyone else trusted.
	if err := c.prependFile(c.primary, "pg_hba.conf", "host all "+PasswordRole+" 127.0.0.1/32 scram-sha-256\n"); err != nil {
		return err
	}
	if err := c.run("pg_ctl", "-D", c.primary, "-l", c.PrimaryLog, "-w", "start"); err != nil {
		return err
	}
	if err := c.run("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.PrimaryPort), "-U", "postgres", "-D", c.standby, "-R", "-X", "stream"); err != nil {
		return err
	}
	if err := c.appendFile(c.standby, "postgresql.conf", fmt.Sprintf("port = %d\nrecovery_min_apply_delay = '%dms'\n", c.StandbyPort, o.ApplyDelay.Milliseconds())); err != nil {
		return err
	}
	if err := c.StartStandby(); err != nil {
		return err
	}
	c.PrimaryURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.PrimaryPort)
	c.StandbyURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.StandbyPort)
	return c.Exec(c.PrimaryURL, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE ROLE `+PasswordRole+` LOGIN SUPERUSER PASSWORD '`+PasswordRolePassword+`'`)
}

// URL returns a URL for the given port as role, with password if set.
func URL(role, password string, port int) string {
	auth := role
	if password != "" {
		auth += ":" + password
	}
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", auth, port)
}

// Stop stops both servers at once and removes the directory.
func (c *Cluster) Stop() {
	if c.standby != "" {
		c.command("pg_ctl", "-D", c.standby, "-m", "immediate", "stop").Run()
	}
	if c.primary != "" {
		c.command("pg_ctl", "-D", c.primary, "-m", "immediate", "stop").Run()
	}
	os.RemoveAll(c.Dir)
}

// StartStandby starts the standby and waits until it accepts connections.
func (c *Cluster) StartStandby() error {
	return c.run("pg_ctl", "-D", c.standby, "-l", c.StandbyLog, "-w", "start")
}

// StopStandby stops the standby cleanly.
func (c *Cluster) StopStandby() error {
	return c.run("pg_ctl", "-D", c.standby, "-m", "fast", "-w", "stop")
}

// SetApplyDelay changes how far behind the standby replays, from now on.
func (c *Cluster) SetApplyDelay(d time.Duration) error {
	if err := c.Exec(c.StandbyURL, fmt.Sprintf("ALTER SYSTEM SET recovery_min_apply_delay = '%dms'", d.Milliseconds())); err != nil {
		return err
	}
	return c.Exec(c.StandbyURL, "SELECT pg_reload_conf()")
}

// Exec runs SQL on a database.
func (c *Cluster) Exec(url, sql string) error {
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		return err
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, c.runAs...), filepath.Join(c.bin, name)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	return cmd
}

func (c *Cluster) run(name string, args ...string) error {
	if out, err := c.command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func (c *Cluster) appendFile(dataDir, name, text string) error {
	f, err := os.OpenFile(filepath.Join(dataDir, name), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString("\n" + text)
	return err
}

func (c *Cluster) prependFile(dataDir, name, text string) error {
	path := filepath.Join(dataDir, name)
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(text), old...), 0o600)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
