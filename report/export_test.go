package report

// SetAfterLiveRead sets a function that runs between the Redis and
// Postgres reads of live queries.
func (s *Store) SetAfterLiveRead(f func()) { s.afterLiveRead = f }

// AuthLimiterEntries returns how many client addresses the limiter of
// authentication failures remembers.
func (s *Server) AuthLimiterEntries() int { return s.limiter.len() }

// SetAuthLimiterCap sets the most addresses the limiter remembers.
func (s *Server) SetAuthLimiterCap(n int) { s.limiter.cap = n }
