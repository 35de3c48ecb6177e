package gate

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/crowdpass/crowdpass"
)

// record is what the gate keeps of an idempotency key, as one string so
// that Refuse can store or read it with a single SET NX GET:
//
//	<status>\n<fingerprint>\n<owner>\n<len(customer)>\n<customer><body>
//
// status 0 is a key in flight, with owner the attempt that holds it (and
// its process, see Admit) followed by '@' and the time (Redis's, in ms)
// after which that attempt cannot be publishing any more; any other status
// is the stored answer, body its bytes. The scripts read the first three lines; the customer may hold any
// byte but NUL.
type record struct {
	status   int
	fp       string
	owner    string
	customer string
	body     []byte
}

func (r record) encode() string {
	var b strings.Builder
	b.Grow(len(r.fp) + len(r.owner) + len(r.customer) + len(r.body) + 16)
	b.WriteString(strconv.Itoa(r.status))
	b.WriteByte('\n')
	b.WriteString(r.fp)
	b.WriteByte('\n')
	b.WriteString(r.owner)
	b.WriteByte('\n')
	b.WriteString(strconv.Itoa(len(r.customer)))
	b.WriteByte('\n')
	b.WriteString(r.customer)
	b.Write(r.body)
	return b.String()
}

// split encodes r in two, around the end of its owner line, where the
// admission script writes the in-flight deadline.
func (r record) split() (head, tail string) {
	s := r.encode()
	i := len(strconv.Itoa(r.status)) + 1 + len(r.fp) + 1 + len(r.owner)
	return s[:i], s[i:]
}

func decodeRecord(s string) (record, bool) {
	var r record
	var fields [4]string
	for i := range fields {
		line, rest, ok := strings.Cut(s, "\n")
		if !ok {
			return r, false
		}
		fields[i], s = line, rest
	}
	status, err1 := strconv.Atoi(fields[0])
	n, err2 := strconv.Atoi(fields[3])
	if err1 != nil || err2 != nil || n < 0 || n > len(s) {
		return r, false
	}
	r.status, r.fp, r.owner, r.customer = status, fields[1], fields[2], s[:n]
	r.body = []byte(s[n:])
	return r, true
}

// verdict is what an existing record says to a request with fingerprint fp.
func (r record) verdict(fp string) crowdpass.AdmissionResult {
	switch {
	case r.fp != fp:
		return crowdpass.AdmissionResult{Verdict: crowdpass.Mismatch}
	case r.status == 0:
		return crowdpass.AdmissionResult{Verdict: crowdpass.InProgress}
	}
	return crowdpass.AdmissionResult{Verdict: crowdpass.Replay, Answer: crowdpass.Answer{Status: r.status, Body: r.body}}
}

// replayed is verdict, for a record a call found while the epoch recovers
// (recovering, see epoch.lua; zero if it does not): a refusal given anew
// since the loss (not written back), or an attempt in flight (admitted
// anew since the loss), may yet give way to the answer another process
// gave the key before it, so the caller is told to look again once the
// recovery is over. A 202 is never given way.
func (r record) replayed(fp string, recovering time.Time) crowdpass.AdmissionResult {
	res := r.verdict(fp)
	if res.Verdict == crowdpass.InProgress || res.Verdict == crowdpass.Replay && r.status != http.StatusAccepted && r.owner != restoredOwner {
		res.Recovering = recovering
	}
	return res
}
