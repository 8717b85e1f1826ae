// The site's side, as a Node.js site runs it: the official `pusher` library
// (pinned in package.json) against notifier's Pusher HTTP API, and the
// site's auth endpoints, signed with that library.
//
// Argument: JSON {appId, key, secret, host, port} (the api listener).
// Writes JSON lines: {type: "ready", port} once its endpoints listen, then
//   {type: "auth", channel, socket_id, user} for each request signed, and
//   {type: "answer", id, status, body} or {type: "answer", id, error, status, body}
//   for each command.
// Reads JSON lines: {id, call, args, forged?}: call one of the library's
//   methods (trigger, triggerBatch, get, post, sendToUser,
//   terminateUserConnections) with args; `forged` calls it with a wrong secret.
// Endpoints (form-encoded, as pusher-js posts them):
//   POST /auth       socket_id, channel_name, user: authorizeChannel (presence
//                    channels join as {user_id: user, user_info: {name: user}},
//                    a user of digits as a number)
//   POST /user-auth  socket_id, user: authenticateUser as {id: user}
// Ends when its stdin closes.

import http from "node:http";
import readline from "node:readline";
import Pusher from "pusher";

const config = JSON.parse(process.argv[2]);
const options = {
  appId: config.appId, key: config.key, secret: config.secret,
  host: config.host, port: config.port, useTLS: false, timeout: 10000,
};
const site = new Pusher(options);
const forged = new Pusher({ ...options, secret: "not-the-secret-" + config.secret });

function write(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

// A user of digits is signed as a number, as Laravel signs its users' ids.
function userId(user) {
  return /^[0-9]+$/.test(user) ? Number(user) : user;
}

function form(request) {
  return new Promise((resolve, reject) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => resolve(new URLSearchParams(body)));
    request.on("error", reject);
  });
}

const server = http.createServer(async (request, response) => {
  const fields = await form(request);
  const socketId = fields.get("socket_id");
  const user = fields.get("user") || "anonymous";
  let answer;
  try {
    if (request.method === "POST" && request.url === "/auth") {
      const channel = fields.get("channel_name");
      write({ type: "auth", channel, socket_id: socketId, user });
      answer = channel.startsWith("presence-")
        ? site.authorizeChannel(socketId, channel, { user_id: userId(user), user_info: { name: user } })
        : site.authorizeChannel(socketId, channel);
    } else if (request.method === "POST" && request.url === "/user-auth") {
      write({ type: "user-auth", socket_id: socketId, user });
      answer = site.authenticateUser(socketId, { id: user, name: user });
    } else {
      response.writeHead(404).end();
      return;
    }
  } catch (error) {
    write({ type: "auth-error", error: String(error) });
    response.writeHead(403).end(String(error));
    return;
  }
  response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
});

async function perform(command) {
  const library = command.forged ? forged : site;
  try {
    const response = await library[command.call](...command.args);
    const text = await response.text();
    let body = text;
    try { body = JSON.parse(text); } catch { /* a line of text */ }
    write({ type: "answer", id: command.id, status: response.status, body });
  } catch (error) {
    write({ type: "answer", id: command.id, error: String(error.message || error),
            status: error.status ?? null, body: error.body ?? null });
  }
}

server.listen(0, "127.0.0.1", () => {
  write({ type: "ready", port: server.address().port });
  const commands = readline.createInterface({ input: process.stdin });
  commands.on("line", (line) => {
    if (line.trim()) perform(JSON.parse(line));
  });
  commands.on("close", () => process.exit(0));
});
