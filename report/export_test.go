package report

// SetAfterLiveRead sets a function that runs between the Redis and
// Postgres reads of live queries.
func (s *Store) SetAfterLiveRead(f func()) { s.afterLiveRead = f }
