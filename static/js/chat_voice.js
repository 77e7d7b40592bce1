/* The chat page's voice controls, on js/voice.js: the microphone beside
 * the composer, "send on a pause", the hands-free voice mode (listen,
 * send, read the answer as it streams, listen again) and the "Read aloud"
 * button under answers. Load it after voice.js and before chat.js, which
 * calls attach() and routes the dictation frames here (frames).
 *
 * window.ChatPageVoice = {
 *   frames                       the socket frame handlers (dictation.*)
 *   attach(options) -> voice     {readButton(getText), answerText(id,
 *                                text, final), stop()}
 * }
 */
(function () {
  "use strict";

  let dictation = null;
  const frames = {};
  for (const type of ["dictation.started", "dictation.partial", "dictation.final", "dictation.error"]) {
    frames[type] = (frame) => {
      if (dictation) dictation.frames[type](frame);
    };
  }

  const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;
  const PAUSE_KEY = "chat.sendOnPause";

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function languageName(code) {
    try {
      return new Intl.DisplayNames([pageLanguage()], { type: "language" }).of(code) || code;
    } catch (error) {
      return code;
    }
  }

  function pageLanguage() {
    return (document.documentElement.lang || "en").toLowerCase();
  }

  /* The language text is in, as far as reading it needs to know. */
  function textLanguage(text) {
    if (CJK.test(text)) return "zh";
    const page = pageLanguage();
    return page.startsWith("zh") ? "en" : page;
  }

  /* options: socket, input, autosize(), send(), showError(message),
   * speech ({dictation, reason, maxSeconds, synthesis}) */
  function attach(options) {
    const speech = options.speech || {};
    const $ = (id) => document.getElementById(id);
    const mic = $("mic");
    const voiceMode = $("voice-mode");
    const pauseBox = $("send-on-pause");
    const pauseLabel = $("send-on-pause-label");
    const format = window.ChatVoice.recordingFormat();
    const canDictate = Boolean(speech.dictation && format && mic);
    let prefix = "";
    let handsFree = false;
    let following = null; // the answer id voice mode reads

    // A recogniser of other languages than the page's still takes speech,
    // and says so on its button.
    const languages = speech.languages || [];
    const pagePrimary = pageLanguage().split("-")[0];
    const micNote =
      languages.length && !languages.includes(pagePrimary)
        ? interpolate(gettext("Dictation understands %(languages)s."), {
            languages: languages.map((code) => languageName(code)).join(", "),
          }, true)
        : "";
    if (mic) {
      mic.hidden = !canDictate;
      if (!canDictate) {
        mic.title = speech.reason || gettext("Dictation is not available in this browser.");
      }
    }
    if (pauseLabel) pauseLabel.hidden = !canDictate;
    if (voiceMode) voiceMode.hidden = !canDictate;
    if (pauseBox) {
      pauseBox.checked = localStorage.getItem(PAUSE_KEY) === "1";
      pauseBox.addEventListener("change", () =>
        localStorage.setItem(PAUSE_KEY, pauseBox.checked ? "1" : "0")
      );
    }

    function showText(text) {
      const joiner = prefix && text && !/\s$/.test(prefix) ? " " : "";
      options.input.value = prefix + joiner + text;
      options.autosize();
    }

    function setMicState(state) {
      if (!mic) return;
      const on = state === "listening" || state === "starting";
      mic.classList.toggle("recording", on);
      mic.classList.toggle("busy", state === "finishing");
      mic.setAttribute("aria-pressed", on ? "true" : "false");
      const label = on ? gettext("Stop dictation") : gettext("Dictate");
      mic.setAttribute("aria-label", label);
      mic.title = micNote ? `${label} · ${micNote}` : label;
      mic.dataset.state = state;
    }

    dictation = window.ChatVoice.dictation({
      socket: options.socket,
      language: pageLanguage,
      maxSeconds: speech.maxSeconds,
      sendOnPause: () => handsFree || Boolean(pauseBox && pauseBox.checked),
      onState: setMicState,
      onText: (text) => showText(text),
      onError: (message) => {
        options.showError(message);
        setHandsFree(false);
      },
      onFinal: (text, paused) => {
        if (paused && options.input.value.trim()) {
          options.send();
        } else if (handsFree) {
          // Nothing heard: listen again.
          dictation.start();
        }
      },
    });

    if (canDictate) setMicState("idle");

    const reader = window.ChatVoice.reader({
      serverUrl: speech.synthesis ? "/speech/say/" : null,
      headers: () => ({ "X-CSRFToken": csrfToken() }),
      onError: (message) => options.showError(message),
      onState: (reading) => document.body.classList.toggle("reading-aloud", reading),
      onDone: () => {
        if (handsFree && following !== null) {
          following = null;
          startListening();
        }
      },
    });

    function startListening() {
      prefix = options.input.value;
      dictation.start();
    }

    function setHandsFree(on) {
      handsFree = on;
      if (!voiceMode) return;
      voiceMode.classList.toggle("active", on);
      voiceMode.setAttribute("aria-pressed", on ? "true" : "false");
      if (!on) {
        following = null;
        reader.stop();
        if (dictation.state !== "idle") dictation.cancel();
      }
    }

    if (mic) {
      mic.addEventListener("click", () => {
        if (dictation.state === "idle") startListening();
        else dictation.stop();
      });
    }
    if (voiceMode) {
      voiceMode.addEventListener("click", () => {
        setHandsFree(!handsFree);
        if (handsFree) {
          reader.stop();
          startListening();
        }
      });
    }

    return {
      /* A "Read aloud" button for an answer; getText() gives its text. */
      readButton(getText) {
        if (!window.speechSynthesis && !speech.synthesis) return null;
        const button = document.createElement("button");
        button.type = "button";
        button.className = "small-button";
        button.dataset.testid = "read-aloud";
        button.textContent = gettext("Read aloud");
        button.addEventListener("click", () => {
          if (reader.reading && button.classList.contains("reading")) {
            reader.stop();
            return;
          }
          for (const other of document.querySelectorAll('[data-testid="read-aloud"].reading')) {
            other.classList.remove("reading");
          }
          const text = getText();
          button.classList.add("reading");
          reader.read(text, textLanguage(text));
        });
        return button;
      },
      /* An answer's text as it streams (final: it is finished). In voice
       * mode the newest answer is read sentence by sentence. */
      answerText(id, text, final) {
        if (!handsFree) return;
        if (following === null && !final) {
          following = id;
          reader.stop();
        }
        // Markdown's marks are not read out; removing characters keeps a
        // growing text's beginning the same.
        const spoken = text.replace(/[*#`_>~|]/g, "");
        if (following === id) reader.follow(spoken, final, textLanguage(spoken));
      },
      /* Stop voice mode, a dictation and reading; whether any was on. */
      stop() {
        const busy = handsFree || reader.reading || dictation.state !== "idle";
        setHandsFree(false);
        reader.stop();
        if (dictation.state !== "idle") dictation.cancel();
        return busy;
      },
    };
  }

  window.ChatPageVoice = { frames, attach };
})();
