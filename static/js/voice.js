/* Voice, for the chat page (js/chat.js) and the widget frame
 * (widget/frame.js): dictation over the page's own socket, and reading
 * answers aloud. Load it after stream_client.js and the catalogue.
 *
 * window.ChatVoice = {
 *   recordingFormat() -> string|null  the MIME type this browser records
 *                                     in that the server takes, or null
 *   dictation(options) -> dictation   the microphone: records, streams the
 *                                     audio, shows the text as it comes
 *   reader(options) -> reader         reads text aloud, sentence by
 *                                     sentence, even while it streams
 * }
 *
 * Dictation: dictation.start {format, language}, the recording as binary
 * frames every 250 ms, dictation.stop; the server answers
 * dictation.partial / dictation.final / dictation.error (see
 * chat/consumers/dictation.py). With "send on a pause", a second and a
 * half of quiet after speech ends the recording and sends the text.
 *
 * Reading: the browser's own voice for the language when it has one,
 * else the server's (espeak-ng, POST options.serverUrl), one sentence at
 * a time so that reading starts before the answer is finished.
 */
(function () {
  "use strict";

  const FORMATS = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/ogg"];
  const SLICE_MS = 250;
  const PAUSE_MS = 1500;
  const SPEECH_LEVEL = 0.02; // RMS of the signal, 0..1
  const QUIET_LEVEL = 0.012;

  function recordingFormat() {
    if (!window.MediaRecorder || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return null;
    }
    return FORMATS.find((type) => MediaRecorder.isTypeSupported(type)) || null;
  }

  /* options:
   *   socket           the page's ChatStream connection
   *   language()       the language to recognise (BCP 47), e.g. "en"
   *   maxSeconds       the longest recording the server takes
   *   onText(text, final)  show the recognised text (replace, not append)
   *   onState(state)   "idle", "starting", "listening" or "finishing"
   *   onError(message) a problem, in words
   *   onPause()        called when send on a pause ended a recording;
   *                    the final text then goes to onFinal
   *   onFinal(text, paused)  the last text of a dictation
   *   sendOnPause()    whether a pause ends the recording
   */
  function dictation(options) {
    let state = "idle";
    let recorder = null;
    let stream = null;
    let chain = Promise.resolve();
    let meter = null;
    let limitTimer = null;
    let paused = false;

    function setState(next) {
      state = next;
      options.onState(next);
    }

    function release() {
      if (meter) {
        clearInterval(meter.timer);
        meter.context.close().catch(() => {});
        meter = null;
      }
      clearTimeout(limitTimer);
      if (stream) for (const track of stream.getTracks()) track.stop();
      stream = null;
    }

    function watchForPause() {
      const AudioContext = window.AudioContext || window.webkitAudioContext;
      if (!AudioContext) return;
      const context = new AudioContext();
      const analyser = context.createAnalyser();
      analyser.fftSize = 1024;
      context.createMediaStreamSource(stream).connect(analyser);
      const samples = new Float32Array(analyser.fftSize);
      let heard = false;
      let quietSince = 0;
      const timer = setInterval(() => {
        analyser.getFloatTimeDomainData(samples);
        let sum = 0;
        for (const x of samples) sum += x * x;
        const level = Math.sqrt(sum / samples.length);
        const now = performance.now();
        if (level > SPEECH_LEVEL) {
          heard = true;
          quietSince = 0;
        } else if (heard && level < QUIET_LEVEL) {
          quietSince = quietSince || now;
          if (now - quietSince > PAUSE_MS && options.sendOnPause() && state === "listening") {
            paused = true;
            if (options.onPause) options.onPause();
            stop();
          }
        }
      }, 100);
      meter = { context, timer };
    }

    async function start() {
      if (state !== "idle") return;
      const format = recordingFormat();
      if (!format) {
        options.onError(gettext("This browser cannot record audio."));
        return;
      }
      setState("starting");
      paused = false;
      try {
        stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
        });
      } catch (error) {
        setState("idle");
        options.onError(
          error && error.name === "NotAllowedError"
            ? gettext("The microphone is blocked: allow it in the browser's site settings.")
            : gettext("No microphone could be opened.")
        );
        return;
      }
      if (!options.socket.send({ type: "dictation.start", format, language: options.language() })) {
        release();
        setState("idle");
        options.onError(gettext("Not connected: dictation needs the connection."));
        return;
      }
      chain = Promise.resolve();
      recorder = new MediaRecorder(stream, { mimeType: format, audioBitsPerSecond: 32000 });
      recorder.addEventListener("dataavailable", (event) => {
        if (!event.data || !event.data.size) return;
        const piece = event.data;
        chain = chain
          .then(() => piece.arrayBuffer())
          .then((buffer) => {
            if (!options.socket.sendBinary(buffer)) throw new Error("offline");
          });
      });
      recorder.addEventListener("stop", () => {
        const ending = recorder;
        chain
          .then(() => {
            if (ending.cancelled) options.socket.send({ type: "dictation.cancel" });
            else options.socket.send({ type: "dictation.stop" });
          })
          .catch(() => {
            setState("idle");
            options.onError(gettext("The connection dropped: dictation stopped."));
          });
      });
      recorder.start(SLICE_MS);
      setState("listening");
      watchForPause();
      if (options.maxSeconds) {
        limitTimer = setTimeout(stop, Math.max(1, options.maxSeconds - 1) * 1000);
      }
    }

    function stop() {
      if (state !== "listening" && state !== "starting") return;
      if (recorder && recorder.state !== "inactive") recorder.stop();
      release();
      setState("finishing");
    }

    function cancel() {
      if (recorder && recorder.state !== "inactive") {
        recorder.cancelled = true;
        recorder.stop();
      }
      release();
      setState("idle");
    }

    function toggle() {
      if (state === "idle") start();
      else if (state === "listening") stop();
    }

    const frames = {
      "dictation.started": () => {},
      "dictation.partial": (frame) => options.onText(frame.text || "", false),
      "dictation.final": (frame) => {
        setState("idle");
        options.onText(frame.text || "", true);
        if (options.onFinal) options.onFinal(frame.text || "", paused);
      },
      "dictation.error": (frame) => {
        if (recorder && recorder.state !== "inactive") {
          recorder.cancelled = true;
          recorder.stop();
        }
        release();
        setState("idle");
        if (frame.text) options.onText(frame.text, true);
        options.onError(frame.error || gettext("Dictation failed."));
      },
    };

    return {
      start,
      stop,
      cancel,
      toggle,
      frames,
      get state() {
        return state;
      },
    };
  }

  // --- reading aloud -------------------------------------------------------

  const SENTENCE_END = /([.!?。！？;；:：\n]+)(\s+|$)/g;

  /* The sentences of text that are complete, and where the rest starts. */
  function sentences(text, from, final) {
    const out = [];
    let start = from;
    SENTENCE_END.lastIndex = from;
    let match;
    while ((match = SENTENCE_END.exec(text))) {
      const end = match.index + match[0].length;
      if (!final && end >= text.length && !match[2]) break; // may go on ("3.5")
      const sentence = text.slice(start, end).trim();
      if (sentence) out.push(sentence);
      start = end;
      if (match[0].length === 0) SENTENCE_END.lastIndex++;
    }
    if (final) {
      const rest = text.slice(start).trim();
      if (rest) out.push(rest);
      start = text.length;
    }
    return { out, next: start };
  }

  /* Pieces of at most max characters, cut at a space where there is one:
   * a "sentence" without stops would otherwise be read as one. */
  function pieces(sentence, max = 400) {
    const out = [];
    let rest = sentence;
    while (rest.length > max) {
      let cut = rest.lastIndexOf(" ", max);
      if (cut < max / 2) cut = max;
      out.push(rest.slice(0, cut).trim());
      rest = rest.slice(cut).trim();
    }
    if (rest) out.push(rest);
    return out;
  }

  function browserVoice(language) {
    if (!window.speechSynthesis) return null;
    const primary = (language || "en").toLowerCase().split("-")[0];
    const voices = window.speechSynthesis.getVoices();
    return (
      voices.find((v) => v.lang && v.lang.toLowerCase() === (language || "").toLowerCase()) ||
      voices.find((v) => v.lang && v.lang.toLowerCase().split(/[-_]/)[0] === primary) ||
      null
    );
  }

  /* options:
   *   serverUrl         POST {text, language, ...serverBody()} -> audio/wav
   *   serverBody()      extra fields for the server (the widget's key, token)
   *   headers()         extra headers (the CSRF token)
   *   onState(reading)  reading started (true) or ended (false)
   *   onError(message)
   */
  function reader(options) {
    let queue = [];
    let playing = false;
    let current = null; // {cancel()}
    let source = null; // {text, next, final}
    let generation = 0;
    let language = "en";
    const audio = new Audio();

    function setReading(value) {
      if (options.onState) options.onState(value);
    }

    function speakBrowser(text, voice) {
      return new Promise((resolve) => {
        const utterance = new SpeechSynthesisUtterance(text);
        utterance.voice = voice;
        utterance.lang = voice.lang;
        utterance.onend = resolve;
        utterance.onerror = resolve;
        current = { cancel: () => window.speechSynthesis.cancel() };
        window.speechSynthesis.speak(utterance);
      });
    }

    async function speakServer(text) {
      const controller = new AbortController();
      current = {
        cancel: () => {
          controller.abort();
          audio.pause();
        },
      };
      const response = await fetch(options.serverUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...(options.headers ? options.headers() : {}) },
        body: JSON.stringify({ text, language, ...(options.serverBody ? options.serverBody() : {}) }),
        signal: controller.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        let message = gettext("Reading aloud failed.");
        try {
          message = (await response.json()).error || message;
        } catch (error) {
          // not JSON
        }
        throw new Error(message);
      }
      const url = URL.createObjectURL(await response.blob());
      try {
        audio.src = url;
        await new Promise((resolve, reject) => {
          audio.onended = resolve;
          audio.onerror = () => reject(new Error(gettext("The audio could not be played.")));
          audio.onpause = resolve;
          audio.play().catch(reject);
        });
      } finally {
        URL.revokeObjectURL(url);
      }
    }

    async function pump() {
      if (playing) return;
      playing = true;
      setReading(true);
      const mine = generation;
      try {
        while (queue.length && mine === generation) {
          const text = queue.shift();
          const voice = browserVoice(language);
          if (voice) await speakBrowser(text, voice);
          else await speakServer(text);
        }
      } catch (error) {
        if (mine === generation && error.name !== "AbortError" && options.onError) {
          options.onError(error.message);
        }
        queue = [];
      } finally {
        if (mine === generation) {
          current = null;
          playing = false;
          if (queue.length) pump();
          else if (!(source && !source.final)) {
            setReading(false);
            if (options.onDone) options.onDone();
          }
        }
      }
    }

    /* Follow text that grows (a streaming answer): each complete
     * sentence is read as soon as it is there. final: no more comes. */
    function follow(text, final, lang) {
      if (!source) source = { next: 0, final: false };
      if (lang) language = lang;
      const { out, next } = sentences(text, source.next, final);
      source.next = next;
      source.final = final;
      for (const sentence of out) queue.push(...pieces(sentence));
      if (queue.length) pump();
      else if (final && !playing) {
        setReading(false);
        if (options.onDone) options.onDone();
      }
    }

    function read(text, lang) {
      stop();
      follow(text, true, lang);
    }

    function stop() {
      generation += 1;
      queue = [];
      source = null;
      if (current) current.cancel();
      current = null;
      playing = false;
      setReading(false);
    }

    return {
      read,
      follow,
      stop,
      get reading() {
        return playing || queue.length > 0 || Boolean(source && !source.final);
      },
    };
  }

  window.ChatVoice = { recordingFormat, dictation, reader, sentences };
})();
