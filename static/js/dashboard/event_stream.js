/* Reading a text/event-stream response of JSON events (the compare page's
 * "ask all", the knowledge test box's answer).
 *
 * window.EventStream.read(response, handle) -> Promise<boolean>
 *   calls handle(event) for each event but {"type": "end"}; resolves true
 *   when that end came, false when the stream stopped before it. Events
 *   that are not JSON are skipped.
 */
(function () {
  "use strict";

  async function read(response, handle) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let ended = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).trimStart())
          .join("\n");
        if (!data) continue;
        let event;
        try {
          event = JSON.parse(data);
        } catch (_err) {
          continue;
        }
        if (event.type === "end") ended = true;
        else handle(event);
      }
    }
    return ended;
  }

  window.EventStream = Object.freeze({ read });
})();
