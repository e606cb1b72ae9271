// "new graph": attribute a prompt on the server (POST /api/attribution/jobs), follow the worker's
// progress as Server-Sent Events, cancel it, and open the graph when it is written. Shown only
// when the server was started with a model and transcoders.

import { api } from "./api.js";

export class AttributePanel {
  constructor(root, { onDone, setStatus }) {
    Object.assign(this, { root, onDone, setStatus });
    this.job = null;
    this.events = null;
    this.progressSeen = []; // every fraction the bar showed (the tests read it)
    const $ = (id) => root.querySelector(`#${id}`);
    Object.assign(this, {
      prompt: $("attr-prompt"), targets: $("attr-targets"), budget: $("attr-budget"),
      runButton: $("attr-run"), cancelButton: $("attr-cancel"), bar: $("attr-progress"), status: $("attr-status"),
    });
    this.runButton.addEventListener("click", () => this.run());
    this.cancelButton.addEventListener("click", () => this.cancel());
  }

  async run() {
    const prompt = this.prompt.value.trim();
    if (!prompt) { this.say("type a prompt first", true); return; }
    const targets = this.targets.value.split(",").map((t) => t.trim()).filter(Boolean);
    const budget = this.budget.value ? Number(this.budget.value) : null;
    this.progressSeen = [];
    this.setProgress(0);
    try {
      this.job = await api.startAttribution({ prompt, targets, max_feature_nodes: budget });
    } catch (error) {
      this.say(`not started: ${error.message}`, true);
      return;
    }
    this.runButton.disabled = true;
    this.cancelButton.disabled = false;
    this.root.dataset.job = this.job.id;
    this.root.dataset.jobState = "running";
    this.say(`${this.job.phase} …`);
    this.events = new EventSource(api.attributionEventsUrl(this.job.id));
    this.events.onmessage = (message) => this.update(JSON.parse(message.data));
    this.events.onerror = () => { if (this.job?.state === "running") this.say("progress stream interrupted; retrying …"); };
  }

  update(job) {
    this.job = job;
    this.setProgress(job.fraction);
    const rows = job.rows_total ? ` ${job.rows_done}/${job.rows_total} rows` : "";
    this.say(`${job.phase}${rows} · ${job.elapsed_s.toFixed(0)} s`);
    if (job.state === "running") return;
    this.events.close();
    this.events = null;
    this.runButton.disabled = false;
    this.cancelButton.disabled = true;
    this.root.dataset.jobState = job.state;
    this.say(job.message, job.state === "failed");
    if (job.state === "done") this.onDone(job.slug);
  }

  async cancel() {
    if (!this.job) return;
    try {
      await api.cancelAttribution(this.job.id);
    } catch (error) {
      this.say(`cannot cancel: ${error.message}`, true);
    }
  }

  setProgress(fraction) {
    this.bar.value = fraction;
    this.progressSeen.push(fraction);
  }

  say(text, error = false) {
    this.status.textContent = text;
    this.status.classList.toggle("error", error);
  }
}
