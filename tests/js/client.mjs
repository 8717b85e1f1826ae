// A subscriber in Node.js: pusher-js 8 (its node build) alone, or Laravel
// Echo 2 over it, as package.json pins them, connected to notifier.
//
// Argument: JSON {lib: "pusher-js" | "echo", key, host, port, auth, user}:
//   the public listener's host and port, the site's base URL (site.mjs) for
//   its auth endpoints, and the user the site signs this client in as.
// Reads JSON lines (commands):
//   {op: "subscribe", channel, events?}  pusher-js: subscribe, hear every event;
//       Echo: Echo.channel / Echo.private / Echo.join by the name's prefix,
//       .listen(".event") for each of `events`
//   {op: "unsubscribe", channel}
//   {op: "signin"}                       pusher-js: sign in (user authentication)
//   {op: "whisper", channel, event, data}
//   {op: "disconnect"}
// Writes JSON lines:
//   {type: "state", previous, current, socket_id}
//   {type: "error", code, message}                 the connection's errors
//   {type: "subscribed", channel, members?, me?}    presence: [{id, info}]
//   {type: "subscription_error", channel, status, error}
//   {type: "event", channel, event, data}
//   {type: "joining" | "leaving", channel, id?, info}
//   {type: "user_event", event, data}              events sent to the user
//   {type: "frame", event, channel}                every frame received
// Ends when its stdin closes.

import readline from "node:readline";
import Pusher from "pusher-js";
import Echo from "laravel-echo";

const config = JSON.parse(process.argv[2]);

function write(line) {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const common = {
  cluster: "mt1",
  wsHost: config.host,
  wsPort: config.port,
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
};

let pusher;
let echo;
if (config.lib === "echo") {
  echo = new Echo({
    broadcaster: "pusher",
    Pusher,
    key: config.key,
    ...common,
    authEndpoint: config.auth + "/auth",
    auth: { headers: {}, params: { user: config.user } },
    userAuthentication: { endpoint: config.auth + "/user-auth", headers: {}, params: { user: config.user } },
  });
  pusher = echo.connector.pusher;
} else {
  pusher = new Pusher(config.key, {
    ...common,
    channelAuthorization: { endpoint: config.auth + "/auth", transport: "ajax", params: { user: config.user } },
    userAuthentication: { endpoint: config.auth + "/user-auth", transport: "ajax", params: { user: config.user } },
  });
}

pusher.connection.bind("state_change", (states) => {
  write({ type: "state", previous: states.previous, current: states.current,
          socket_id: pusher.connection.socket_id ?? null });
});
pusher.connection.bind("error", (error) => {
  const data = (error && error.data) || {};
  write({ type: "error", code: data.code ?? null, message: data.message ?? String(error && error.type) });
});
pusher.connection.bind("message", (message) => {
  write({ type: "frame", event: message.event, channel: message.channel ?? null });
});
pusher.user.bind_global((event, data) => write({ type: "user_event", event, data }));

function membersOf(members) {
  const list = [];
  members.each((member) => list.push({ id: member.id, info: member.info }));
  list.sort((a, b) => (a.id < b.id ? -1 : 1));
  return list;
}

function subscribeWithPusherJs(name) {
  const channel = pusher.subscribe(name);
  channel.bind("pusher:subscription_succeeded", (data) => {
    if (name.startsWith("presence-")) {
      write({ type: "subscribed", channel: name, members: membersOf(data), me: data.me && data.me.id });
    } else {
      write({ type: "subscribed", channel: name });
    }
  });
  channel.bind("pusher:subscription_error", (error) => {
    write({ type: "subscription_error", channel: name, status: error.status ?? null, error: error.error ?? null });
  });
  channel.bind("pusher:member_added", (member) => {
    write({ type: "joining", channel: name, id: member.id, info: member.info });
  });
  channel.bind("pusher:member_removed", (member) => {
    write({ type: "leaving", channel: name, id: member.id, info: member.info });
  });
  channel.bind_global((event, data) => {
    if (!event.startsWith("pusher:")) write({ type: "event", channel: name, event, data });
  });
}

function subscribeWithEcho(name, events) {
  let channel;
  if (name.startsWith("presence-")) {
    channel = echo.join(name.slice("presence-".length))
      .here((members) => write({ type: "subscribed", channel: name, members: members.map((info) => ({ info })) }))
      .joining((info) => write({ type: "joining", channel: name, info }))
      .leaving((info) => write({ type: "leaving", channel: name, info }));
  } else {
    channel = name.startsWith("private-")
      ? echo.private(name.slice("private-".length))
      : echo.channel(name);
    channel.subscribed(() => write({ type: "subscribed", channel: name }));
  }
  channel.error((error) => {
    write({ type: "subscription_error", channel: name, status: error.status ?? null, error: error.error ?? null });
  });
  for (const event of events || []) {
    channel.listen("." + event, (data) => write({ type: "event", channel: name, event, data }));
  }
}

function perform(command) {
  switch (command.op) {
    case "subscribe":
      if (echo) subscribeWithEcho(command.channel, command.events);
      else subscribeWithPusherJs(command.channel);
      break;
    case "unsubscribe":
      if (echo) echo.leaveChannel(command.channel);
      else pusher.unsubscribe(command.channel);
      break;
    case "signin":
      pusher.signin();
      break;
    case "whisper":
      pusher.channel(command.channel).trigger("client-" + command.event, command.data);
      break;
    case "disconnect":
      pusher.disconnect();
      break;
    default:
      write({ type: "unknown-command", command });
  }
}

const commands = readline.createInterface({ input: process.stdin });
commands.on("line", (line) => {
  if (line.trim()) perform(JSON.parse(line));
});
commands.on("close", () => {
  pusher.disconnect();
  process.exit(0);
});
