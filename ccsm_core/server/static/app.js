// The ccsm page: speech streamed from /v1/audio/speech and played while it arrives, saved voices,
// and a chat with the server's text model. Plain browser JavaScript, no build step.
"use strict";

(() => {
  const SAMPLE_RATE = 24000; // the server's PCM: 16-bit signed little-endian, mono, 24 kHz
  const MIN_BUFFER = 1920; // samples per scheduled buffer (one 80 ms frame) unless the stream ends
  const LEAD_S = 0.15; // how far ahead of the clock playback (re)starts
  const KEY_STORE = "ccsm.apiKey";

  const $ = (id) => document.getElementById(id);

  // Counters for tests and for curious users: samplesReceived counts decoded samples,
  // samplesPlayed the samples of buffers that have started playing, requests the speech
  // requests made, errors the errors shown, active the speech requests in flight.
  const stats = { samplesPlayed: 0, samplesReceived: 0, requests: 0, errors: 0, active: 0 };
  window.ccsmStats = stats;

  // ---- status line and requests ----

  function setStatus(message, isError = false) {
    const el = $("status");
    el.textContent = message;
    el.classList.toggle("error", isError);
    if (isError) stats.errors += 1;
  }

  function authHeaders(extra = {}) {
    const headers = { ...extra };
    const key = $("api-key").value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    return headers;
  }

  // The message of an error response: OpenAI's {"error": {"message": ...}}, else what there is.
  async function errorMessage(response) {
    let text = "";
    try {
      text = await response.text();
    } catch (_) {
      /* no body */
    }
    try {
      const body = JSON.parse(text);
      const error = body && (body.error ?? body.detail);
      if (typeof error === "string") return error;
      if (error && error.message) return error.message;
      if (error) return JSON.stringify(error);
    } catch (_) {
      /* not JSON */
    }
    const head = `${response.status} ${response.statusText}`.trim();
    return text ? `${head}: ${text.slice(0, 300)}` : head;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response;
  }

  // ---- PCM: bytes to samples, samples to Web Audio ----

  // Turns byte chunks of int16 LE into Int16Arrays; a chunk's odd last byte waits for the next.
  class PcmDecoder {
    constructor() {
      this.odd = null;
    }

    push(bytes) {
      let data = bytes;
      if (this.odd !== null) {
        data = new Uint8Array(bytes.length + 1);
        data[0] = this.odd;
        data.set(bytes, 1);
        this.odd = null;
      }
      const n = data.length >> 1;
      if (data.length & 1) this.odd = data[data.length - 1];
      const view = new DataView(data.buffer, data.byteOffset, n * 2);
      const out = new Int16Array(n);
      for (let i = 0; i < n; i += 1) out[i] = view.getInt16(2 * i, true);
      return out;
    }
  }

  function toFloat(chunks, total) {
    const out = new Float32Array(total);
    let at = 0;
    for (const chunk of chunks) {
      for (let i = 0; i < chunk.length; i += 1) out[at + i] = chunk[i] / 32768;
      at += chunk.length;
    }
    return out;
  }

  // Plays Float32 buffers back to back as they come; counts a buffer's samples as played once
  // the audio clock passes its start time (or it has ended).
  class Player {
    constructor() {
      this.ctx = null;
      this.nextTime = 0;
      this.live = new Set(); // scheduled buffers not yet ended
      this.timer = null;
      this.onchange = () => {};
    }

    context() {
      if (!this.ctx) {
        const AudioContextClass = window.AudioContext || window.webkitAudioContext;
        try {
          this.ctx = new AudioContextClass({ sampleRate: SAMPLE_RATE });
        } catch (_) {
          this.ctx = new AudioContextClass(); // buffers at 24 kHz are resampled
        }
      }
      if (this.ctx.state === "suspended") this.ctx.resume().catch(() => {});
      return this.ctx;
    }

    get playing() {
      return this.live.size > 0;
    }

    play(samples) {
      const ctx = this.context();
      const buffer = ctx.createBuffer(1, samples.length, SAMPLE_RATE);
      buffer.copyToChannel(samples, 0);
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      // the first buffer, or one after the queue ran dry, starts a little ahead of the clock
      if (this.nextTime < ctx.currentTime + 0.01) this.nextTime = ctx.currentTime + LEAD_S;
      const entry = { source, at: this.nextTime, n: samples.length, counted: false };
      source.start(entry.at);
      this.nextTime += buffer.duration;
      source.onended = () => {
        this.count(entry);
        this.live.delete(entry);
        if (!this.live.size) this.onchange();
      };
      this.live.add(entry);
      if (!this.timer) this.timer = setInterval(() => this.poll(), 40);
      this.onchange();
    }

    count(entry) {
      if (entry.counted) return;
      entry.counted = true;
      stats.samplesPlayed += entry.n;
    }

    poll() {
      const now = this.ctx.currentTime;
      let waiting = false;
      for (const entry of this.live) {
        if (now >= entry.at) this.count(entry);
        else waiting = true;
      }
      if (!waiting) {
        clearInterval(this.timer);
        this.timer = null;
      }
    }

    stop() {
      const now = this.ctx ? this.ctx.currentTime : 0;
      for (const entry of this.live) {
        if (now >= entry.at) this.count(entry);
        entry.source.onended = null;
        try {
          entry.source.stop();
        } catch (_) {
          /* not started */
        }
      }
      this.live.clear();
      this.nextTime = 0;
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      this.onchange();
    }
  }

  // A 16-bit mono PCM WAV file of Int16Array chunks.
  function wavBlob(chunks, total) {
    const buffer = new ArrayBuffer(44 + total * 2);
    const view = new DataView(buffer);
    const ascii = (offset, text) => {
      for (let i = 0; i < text.length; i += 1) view.setUint8(offset + i, text.charCodeAt(i));
    };
    ascii(0, "RIFF");
    view.setUint32(4, 36 + total * 2, true);
    ascii(8, "WAVE");
    ascii(12, "fmt ");
    view.setUint32(16, 16, true); // fmt chunk size
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, SAMPLE_RATE, true);
    view.setUint32(28, SAMPLE_RATE * 2, true); // bytes per second
    view.setUint16(32, 2, true); // bytes per sample frame
    view.setUint16(34, 16, true); // bits per sample
    ascii(36, "data");
    view.setUint32(40, total * 2, true);
    let offset = 44;
    for (const chunk of chunks) {
      for (let i = 0; i < chunk.length; i += 1, offset += 2) view.setInt16(offset, chunk[i], true);
    }
    return new Blob([buffer], { type: "audio/wav" });
  }

  // ---- speech ----

  const player = new Player();
  let speechAbort = null;
  let received = { chunks: [], total: 0, voice: "" }; // the last utterance, for Download

  function updateSpeechButtons() {
    $("speak").disabled = speechAbort !== null;
    $("stop").disabled = speechAbort === null && !player.playing;
    $("download").disabled = speechAbort !== null || received.total === 0;
  }
  player.onchange = updateSpeechButtons;

  function stopSpeech() {
    if (speechAbort) speechAbort.abort();
    player.stop();
  }

  function seconds(samples) {
    return (samples / SAMPLE_RATE).toFixed(2);
  }

  async function speak(text, voice) {
    stopSpeech();
    player.context(); // created (or resumed) while the click still counts as a user gesture
    const controller = new AbortController();
    speechAbort = controller;
    received = { chunks: [], total: 0, voice };
    const body = { model: "csm", input: text, voice, response_format: "pcm", stream_format: "audio" };
    const seed = $("seed").value.trim();
    if (seed !== "") body.seed = Number.parseInt(seed, 10);
    const temperature = $("temperature").value.trim();
    if (temperature !== "") body.temperature = Number.parseFloat(temperature);

    stats.requests += 1;
    stats.active += 1;
    updateSpeechButtons();
    setStatus("Generating…");
    const progress = $("progress");
    progress.textContent = "";
    const started = performance.now();
    let firstAudio = null;
    try {
      const response = await api("v1/audio/speech", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.body) throw new Error("this browser cannot read a streamed response");
      const reader = response.body.getReader();
      const decoder = new PcmDecoder();
      let queued = [];
      let queuedSamples = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const samples = decoder.push(value);
        if (!samples.length) continue;
        if (firstAudio === null) firstAudio = performance.now() - started;
        received.chunks.push(samples);
        received.total += samples.length;
        stats.samplesReceived += samples.length;
        queued.push(samples);
        queuedSamples += samples.length;
        if (queuedSamples >= MIN_BUFFER) {
          player.play(toFloat(queued, queuedSamples));
          queued = [];
          queuedSamples = 0;
        }
        progress.textContent = `${seconds(received.total)} s received, first audio after ${Math.round(firstAudio)} ms`;
      }
      if (queuedSamples) player.play(toFloat(queued, queuedSamples));
      if (received.total === 0) {
        setStatus("The server sent no audio.", true);
      } else {
        const took = ((performance.now() - started) / 1000).toFixed(2);
        setStatus(`Done: ${seconds(received.total)} s of audio in ${took} s.`);
      }
    } catch (error) {
      if (error.name === "AbortError") setStatus("Stopped.");
      else setStatus(`Speech failed: ${error.message}`, true);
    } finally {
      stats.active -= 1;
      if (speechAbort === controller) speechAbort = null;
      updateSpeechButtons();
    }
  }

  function download() {
    if (!received.total) return;
    const url = URL.createObjectURL(wavBlob(received.chunks, received.total));
    const link = document.createElement("a");
    link.href = url;
    link.download = "ccsm-speech.wav";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // ---- voices ----

  function option(value, label) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = label;
    return el;
  }

  async function loadVoices(select = null) {
    const picker = $("voice");
    const keep = select ?? picker.value;
    let voices = [];
    try {
      const response = await api("v1/audio/voices");
      voices = (await response.json()).data || [];
    } catch (error) {
      setStatus(`Could not list the voices: ${error.message}`, true);
    }
    const speakers = document.createElement("optgroup");
    speakers.label = "Speakers";
    speakers.append(option("0", "speaker 0"), option("1", "speaker 1"));
    picker.replaceChildren(speakers);
    if (voices.length) {
      const saved = document.createElement("optgroup");
      saved.label = "Saved voices";
      for (const voice of voices) {
        const turns = `${voice.turns} turn${voice.turns === 1 ? "" : "s"}`;
        const length = typeof voice.seconds === "number" ? `, ${voice.seconds.toFixed(1)} s` : "";
        const entry = option(voice.name, `${voice.name} (speaker ${voice.speaker}, ${turns}${length})`);
        entry.dataset.saved = "1";
        saved.append(entry);
      }
      picker.append(saved);
    }
    picker.value = keep;
    if (picker.selectedIndex < 0) picker.value = "0";
    updateVoiceButtons();
  }

  function updateVoiceButtons() {
    const selected = $("voice").selectedOptions[0];
    $("delete-voice").disabled = !(selected && selected.dataset.saved);
  }

  async function deleteVoice() {
    const name = $("voice").value;
    if (!window.confirm(`Delete the saved voice ${name}?`)) return;
    try {
      await api(`v1/audio/voices/${encodeURIComponent(name)}`, { method: "DELETE" });
      setStatus(`Deleted voice ${name}.`);
    } catch (error) {
      setStatus(`Could not delete the voice: ${error.message}`, true);
    }
    await loadVoices("0");
  }

  async function uploadVoice(event) {
    event.preventDefault();
    const file = $("upload-audio").files[0];
    if (!file) {
      setStatus("Choose a recording for the voice.", true);
      return;
    }
    const form = new FormData();
    form.append("name", $("upload-name").value.trim());
    form.append("speaker", $("upload-speaker").value.trim() || "0");
    form.append("text", $("upload-text").value);
    form.append("audio", file, file.name);
    form.append("replace", $("upload-replace").checked ? "true" : "false");
    const button = $("upload");
    button.disabled = true;
    setStatus("Saving the voice…");
    try {
      const response = await api("v1/audio/voices", { method: "POST", body: form });
      const voice = await response.json();
      await loadVoices(voice.name);
      setStatus(`Saved voice ${voice.name} (speaker ${voice.speaker}).`);
      $("upload-form").reset();
    } catch (error) {
      setStatus(`Could not save the voice: ${error.message}`, true);
    } finally {
      button.disabled = false;
    }
  }

  // ---- chat ----

  let chatHistory = [];
  let chatAbort = null;

  async function loadModels() {
    const note = $("chat-note");
    const picker = $("chat-model");
    let models = [];
    try {
      const response = await api("v1/models");
      models = ((await response.json()).data || []).map((m) => m.id).filter((id) => id && id !== "csm");
    } catch (error) {
      note.textContent = `Could not list the models: ${error.message}`;
    }
    const keep = picker.value;
    picker.replaceChildren(...models.map((id) => option(id, id)));
    if (models.includes(keep)) picker.value = keep;
    const usable = models.length > 0;
    picker.disabled = !usable;
    $("chat-input").disabled = !usable;
    $("chat-send").disabled = !usable || chatAbort !== null;
    if (usable) note.textContent = "Replies stream from the text model; tick the box to hear them.";
    else if (!note.textContent.startsWith("Could not")) {
      note.textContent = "No text model is loaded: start the server with a text model to chat.";
    }
    $("chat-panel").classList.toggle("no-model", !usable);
  }

  function addMessage(role, text) {
    const el = document.createElement("div");
    el.className = `message ${role}`;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Model";
    const body = document.createElement("p");
    body.textContent = text;
    el.append(who, body);
    $("chat-log").append(el);
    $("chat-log").scrollTop = $("chat-log").scrollHeight;
    return body;
  }

  async function sendChat(event) {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || chatAbort) return;
    input.value = "";
    if ($("chat-speak").checked) player.context(); // while the click counts as a user gesture
    chatHistory.push({ role: "user", content: text });
    addMessage("user", text);
    const out = addMessage("assistant", "");
    const controller = new AbortController();
    chatAbort = controller;
    $("chat-send").disabled = true;
    let reply = "";
    try {
      const response = await api("v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: $("chat-model").value, messages: chatHistory, stream: true }),
        signal: controller.signal,
      });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      let finished = false;
      while (!finished) {
        const { done, value } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        let end;
        while (!finished && (end = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, end).replace(/\r$/, "");
          pending = pending.slice(end + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") {
            finished = true;
            break;
          }
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            reply += delta.content;
            out.textContent = reply;
            $("chat-log").scrollTop = $("chat-log").scrollHeight;
          }
        }
      }
      chatHistory.push({ role: "assistant", content: reply });
      setStatus("");
      if ($("chat-speak").checked && reply.trim()) speak(reply, $("voice").value);
    } catch (error) {
      chatHistory.pop(); // the message that got no reply
      out.parentElement.classList.add("failed");
      out.textContent = reply || "(no reply)";
      if (error.name !== "AbortError") setStatus(`Chat failed: ${error.message}`, true);
    } finally {
      chatAbort = null;
      $("chat-send").disabled = $("chat-input").disabled;
    }
  }

  function clearChat() {
    if (chatAbort) chatAbort.abort();
    chatHistory = [];
    $("chat-log").replaceChildren();
  }

  // ---- tabs ----

  const tabs = [
    [$("speech-tab"), $("speech-panel")],
    [$("chat-tab"), $("chat-panel")],
  ];

  function showTab(index) {
    tabs.forEach(([tab, panel], i) => {
      const on = i === index;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      panel.hidden = !on;
    });
    if (tabs[index][0].id === "chat-tab") loadModels();
  }

  tabs.forEach(([tab], i) => {
    tab.addEventListener("click", () => showTab(i));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      const next = (i + step + tabs.length) % tabs.length;
      showTab(next);
      tabs[next][0].focus();
    });
  });

  // ---- wiring ----

  const keyInput = $("api-key");
  try {
    keyInput.value = localStorage.getItem(KEY_STORE) || "";
  } catch (_) {
    /* storage blocked */
  }
  keyInput.addEventListener("change", () => {
    try {
      const key = keyInput.value.trim();
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch (_) {
      /* storage blocked */
    }
    loadVoices();
    loadModels();
  });

  $("speech-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text) {
      setStatus("Type something to say.", true);
      return;
    }
    speak(text, $("voice").value);
  });
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("speech-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stopSpeech);
  $("download").addEventListener("click", download);
  $("upload-form").addEventListener("submit", uploadVoice);
  $("voice").addEventListener("change", updateVoiceButtons);
  $("delete-voice").addEventListener("click", deleteVoice);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("chat-clear").addEventListener("click", clearChat);

  updateSpeechButtons();
  loadVoices();
  loadModels();
})();
