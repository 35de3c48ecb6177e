#!/usr/bin/env bash
# Prints how to buy a ticket of the demo event from another terminal.
set -euo pipefail
event_json=$1
addr=${HTTP_ADDR:-:8080}
port=${addr##*:}
event_id=$(grep -o '"event_id":"[^"]*"' "$event_json" | head -1 | cut -d'"' -f4)
category_id=$(grep -o '"category_id":"[^"]*"' "$event_json" | head -1 | cut -d'"' -f4)
token=$(bin/crowdpass token --customer "demo-buyer-$RANDOM" 2>/dev/null)
cat <<MSG

CrowdPass is starting on http://localhost:$port with the demo event "World Cup Final" ($event_id).

Open http://localhost:$port/ to buy in a browser, and http://localhost:$port/dashboard to watch the sale.

Buy two tickets of its first category from another terminal:

  curl -i -X POST http://localhost:$port/orders \\
    -H 'Authorization: Bearer $token' \\
    -H "Idempotency-Key: \$(date +%s%N)" \\
    -H 'Content-Type: application/json' \\
    -d '{"event_id":"$event_id","category_id":"$category_id","quantity":2}'

Watch the outcome arrive on the buyer's WebSocket (any WebSocket client, e.g. 'npx wscat'):

  npx wscat -c 'ws://localhost:$port/ws?access_token=$token'

or read the order: curl -H 'Authorization: Bearer $token' http://localhost:$port/orders/<order_id>
Stock: curl http://localhost:$port/events/$event_id    Health: curl http://localhost:$port/readyz

MSG
