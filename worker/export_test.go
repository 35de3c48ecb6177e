package worker

// SetAfterDecide installs a hook that runs after a batch committed and before
// it is acknowledged, so a test can break the channel at the worst moment.
func SetAfterDecide(w *Worker, f func()) { w.afterDecide = f }
