package replication

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Primary reads the primary database's current WAL position. It keeps a
// small pool with one warm connection, since it is asked once per write.
type Primary struct {
	pool *pgxpool.Pool
}

// NewPrimary connects lazily to the primary at url (a postgres:// URL, as
// Heroku's DATABASE_URL).
func NewPrimary(url string) (*Primary, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("replication: PRIMARY_DATABASE_URL: %w", redact(err))
	}
	cfg.MinConns = 1
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["application_name"] = "split-app-router"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("replication: %w", redact(err))
	}
	return &Primary{pool: pool}, nil
}

// CurrentLSN returns the primary's WAL insert position: every transaction
// committed before the call is at or below it.
func (p *Primary) CurrentLSN(ctx context.Context) (LSN, error) {
	var text string
	if err := p.pool.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		return 0, err
	}
	return ParseLSN(text)
}

// Close closes the pool.
func (p *Primary) Close() { p.pool.Close() }

// redact keeps passwords out of errors about connection strings: pgx's
// parse errors can quote the URL.
func redact(err error) error {
	return fmt.Errorf("%s", passwordRE.ReplaceAllString(err.Error(), "$1:xxxxx@"))
}
