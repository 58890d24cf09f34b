#!/bin/bash
# Times three exports over a store made by benches/ingest.sh (release build), one fresh server
# per case so that its peak RSS is the export's: Q1 a ~5% segment with two fields, Q2 the ~30%
# segment with two fields, Q3 every profile with every field.
#
#   benches/export.sh WORKDIR
cd "${1:?usage: benches/export.sh WORKDIR (made by benches/ingest.sh)}"
B=${CARGO_TARGET_DIR:-$HOME/.cache/segport-target}/release/segport
H=(-H 'Authorization: Bearer d' -H 'x-api-key: k' -H 'x-gw-ims-org-id: bench' -H 'x-sandbox-name: prod' -H 'Content-Type: application/json')
S31=$(python3 -c "import json;print(json.load(open('gen/segments.json'))[31]['id'])")
S0=$(python3 -c "import json;print(json.load(open('gen/segments.json'))[0]['id'])")
run_case() {
  name=$1; body=$2
  /usr/bin/time -v $B serve --listen 127.0.0.1:18444 > serve-$name.log 2> time-$name.txt &
  TP=$!
  for i in $(seq 100); do curl -sf localhost:18444/healthz >/dev/null && break; sleep 0.1; done
  X=$(curl -s -X POST localhost:18444/data/foundation/catalog/dataSets "${H[@]}" -d '{"name":"out","schemaRef":{"id":"https://ns.adobe.com/xdm/context/profile__union"}}' | sed 's|.*@/dataSets/\([0-9a-f]*\).*|\1|')
  body=${body//DATASET/$X}
  ID=$(curl -s -X POST localhost:18444/export/jobs "${H[@]}" -d "$body" | python3 -c 'import json,sys;print(json.load(sys.stdin)["id"])')
  while true; do
    J=$(curl -s localhost:18444/export/jobs/$ID "${H[@]}")
    ST=$(echo "$J" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"])')
    [ "$ST" = "SUCCEEDED" -o "$ST" = "FAILED" ] && break
    sleep 0.2
  done
  echo "$J" | python3 -c "import json,sys;j=json.load(sys.stdin);m=j['metrics'];print('$name', j['status'], 'rows', m.get('totalExportedProfileCounter'), 'export ms', m['profileExportTime']['totalTimeInMs'], 'total ms', m['totalTime']['totalTimeInMs'], j.get('errors',''))"
  pkill -TERM -f "^$B serve --listen 127.0.0.1:18444"; wait $TP 2>/dev/null
  grep "Maximum resident" time-$name.txt
}
run_case q1 "{\"destination\":{\"datasetId\":\"DATASET\"},\"schema\":{\"name\":\"_xdm.context.profile\"},\"fields\":\"identities.id,personalEmail.address\",\"filter\":{\"segments\":[{\"segmentId\":\"$S31\"}]}}"
run_case q2 "{\"destination\":{\"datasetId\":\"DATASET\"},\"schema\":{\"name\":\"_xdm.context.profile\"},\"fields\":\"identities.id,personalEmail.address\",\"filter\":{\"segments\":[{\"segmentId\":\"$S0\"}]}}"
run_case q3 "{\"destination\":{\"datasetId\":\"DATASET\"},\"schema\":{\"name\":\"_xdm.context.profile\"}}"
