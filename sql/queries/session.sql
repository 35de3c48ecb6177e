-- SessionIdleTimeoutDefault sets the session's
-- idle_in_transaction_session_timeout where nothing else did (the server's,
-- the role's or the database's setting, or the URL's options, are kept).
-- name: SessionIdleTimeoutDefault :exec
SELECT set_config('idle_in_transaction_session_timeout', @timeout::text, false)
WHERE current_setting('idle_in_transaction_session_timeout') = '0';
