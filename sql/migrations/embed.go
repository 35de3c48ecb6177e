// Package migrations embeds the goose migrations that build the CrowdPass schema.
// sqlc reads the same files to type the queries in db/.
package migrations

import "embed"

// FS holds every migration, named NNNNN_description.sql.
//
//go:embed *.sql
var FS embed.FS
