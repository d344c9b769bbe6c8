// sensord's API through Node's official gRPC library (@grpc/grpc-js) with @grpc/proto-loader,
// default channel options. Prints one JSON object: the status and the Watch events, each as
// `sensorctl watch -o json` prints it (the JSON contract with `seq` first).
//
// node interop.js --proto DIR --target unix:/path/sensord.sock --sni PATTERN --count N
//                 [--since SEQ] [--ca F --cert F --key F]

'use strict';

const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const args = { since: '0' };
  for (let i = 0; i < argv.length; i += 2) {
    args[argv[i].replace(/^--/, '')] = argv[i + 1];
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const definition = protoLoader.loadSync('sensor/v1/sensor.proto', {
  includeDirs: [args.proto],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const sensorV1 = grpc.loadPackageDefinition(definition).sensor.v1;

const credentials = args.ca
  ? grpc.credentials.createSsl(
      fs.readFileSync(args.ca),
      fs.readFileSync(args.key),
      fs.readFileSync(args.cert),
    )
  : grpc.credentials.createInsecure();
const client = new sensorV1.Sensor(args.target, credentials);
const deadline = () => new Date(Date.now() + 60000);

client.GetStatus({}, { deadline: deadline() }, (err, status) => {
  if (err) {
    console.error(`GetStatus: ${err.message}`);
    process.exit(1);
  }
  const out = { status: { version: status.version, last_seq: Number(status.last_seq) } };
  const events = [];
  const call = client.Watch(
    { filter: { sni: [args.sni] }, since_seq: args.since },
    { deadline: deadline() },
  );
  call.on('data', (ev) => {
    events.push({ seq: Number(ev.seq), ...JSON.parse(ev.json) });
    if (events.length === Number(args.count)) {
      call.cancel();
      out.watch = events;
      console.log(JSON.stringify(out));
      client.close();
    }
  });
  call.on('error', (e) => {
    if (e.code !== grpc.status.CANCELLED) {
      console.error(`Watch: ${e.message}`);
      process.exit(1);
    }
  });
});
