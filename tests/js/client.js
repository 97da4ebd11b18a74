// pipecat's JS client (client-js + websocket-transport) talking to a rustvani-trio server.
// Bundled by esbuild into one script; WavMediaManager keeps it off any CDN (no Daily).
import { PipecatClient } from "@pipecat-ai/client-js";
import { WebSocketTransport, WavMediaManager } from "@pipecat-ai/websocket-transport";

window.runPipecat = async function runPipecat(wsUrl, text) {
  const events = [];
  let answer = "";
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });
  const transport = new WebSocketTransport({ mediaManager: new WavMediaManager() });
  const client = new PipecatClient({
    transport,
    enableMic: false,
    enableCam: false,
    callbacks: {
      onBotReady: (data) => events.push(["bot-ready", data.version]),
      onUserTranscript: (data) => events.push(["user-transcription", data.text]),
      onBotLlmStarted: () => events.push(["bot-llm-started"]),
      onBotLlmText: (data) => { answer += data.text; },
      onBotLlmStopped: () => { events.push(["bot-llm-stopped"]); resolveDone(); },
      onError: (msg) => events.push(["error", JSON.stringify(msg.data ?? msg)]),
    },
  });
  const timer = setTimeout(() => resolveDone(), 15000);
  await client.connect({ wsUrl });
  await client.sendText(text);
  await done;
  clearTimeout(timer);
  try {
    await client.disconnect();
  } catch (e) {
    // WavMediaManager's recorder never began (no microphone here); the socket is closed.
    events.push(["disconnect-note", String(e)]);
  }
  return { events, answer };
};
