// Bare Node.js `ws` echo: the capacity benchmark's reference point (no pipeline at all).
//
// Binary messages come straight back; text (the Vonage first message) is read and dropped.
// permessage-deflate off, as bridge and the Python baseline have it. Prints
// "listening PORT" once bound to 127.0.0.1 on the port given (0: any free one).
// `ws` is installed by scripts/bench into .venv/bench-node (never committed).
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 0);
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port,
  perMessageDeflate: false,
  maxPayload: 65536,
});
wss.on("listening", () => {
  console.log(`listening ${wss.address().port}`);
});
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (isBinary) {
      ws.send(data, { binary: true });
    }
  });
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
