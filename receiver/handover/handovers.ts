// The receiver's side of a handover (docs/design.md, Handover): start the committed image's
// process here when its sender asks, record the decision durably before and after, answer a
// sender that lost the link (Resolve), and after a restart settle a start the previous run left
// undecided. One instance per receiver; `busy` keeps a start and a Resolve of one session from
// interleaving (both check the record, then write it). Every outcome is told to `events`
// (handover-events.ts: the receiver's metrics).

import * as fs from 'node:fs';
import { logger } from '../../common/log';
import { imageMemory } from '../../image/image-memory';
import type { SessionReader } from '../../image/session-reader';
import type { HandoverRecord, HandoverResult } from '../../proto/messages';
import { finishBuiltProcess, restoreProcess } from '../restore/restore-process';
import { handoverRefusal, type HandoverPolicy } from './handover-policy';
import { NO_HANDOVER_EVENTS, type HandoverEvents, type RollbackReason } from './handover-events';
import { readRecord, writeRecord, type StoredRecord } from './handover-record';
import { liveImageProcess } from './process-facts';
import { reapWhenDone } from './reap-handed-over';
import { PrebuiltProcesses } from './prebuilt-processes';

const log = logger('handover');

export class Handovers {
  private readonly busy = new Set<string>();
  /** Destination processes built during pre-copy, by session. */
  readonly prebuilt = new PrebuiltProcesses();

  constructor(
    readonly policy: HandoverPolicy,
    private readonly imagesDir: string,
    private readonly events: HandoverEvents = NO_HANDOVER_EVENTS,
  ) {}

  /** Why a handover for a process of `uid` is refused here (null: accepted). */
  refusal(uid: number): string | null {
    return handoverRefusal(this.policy, uid);
  }

  /** Start the committed image of `image` as a process and `answer` the sender (once). Never
   *  throws: a failure is ok=false and a `rolled-back` record (the restore killed whatever it had
   *  made). */
  async start(image: SessionReader, answer: (r: HandoverResult) => Promise<void>): Promise<void> {
    this.events.handoverStarted();
    const at: { failure: RollbackReason } = { failure: 'refused' };
    let answered = false;
    const once = async (r: HandoverResult): Promise<void> => {
      if (answered) return;
      answered = true;
      await answer(r);
    };
    const result = await this.startProcess(image, at, once);
    await once(result);
    if (result.ok) this.events.handoverSucceeded(result.restoreSeconds);
    else this.events.handoverRolledBack(at.failure);
  }

  /** start() without the events; `at.failure` follows the steps, so that a failure (returned or
   *  caught) is counted with the step it happened in. */
  private async startProcess(image: SessionReader, at: { failure: RollbackReason }, answer: (r: HandoverResult) => Promise<void>): Promise<HandoverResult> {
    const id = image.id;
    if (this.busy.has(id)) return refused(`session ${id}: a handover or resolve of it is already in progress`);
    this.busy.add(id);
    try {
      const readAt = performance.now();
      const before = await readRecord(this.imagesDir, id);
      if (before) return refused(`session ${id} was already handed over (${before.state}${before.reason ? `: ${before.reason}` : ''})`);
      const manifest = await image.committedManifest();
      const state = manifest.processState;
      if (!state) return refused(`session ${id} holds memory only (not --restorable)`);
      // The uid the SessionStart claimed was checked then; these are the credentials it will run with.
      const why = this.refusal(state.creds.uid[0]);
      if (why) return refused(why);
      const facts = { expectedPid: state.pid, exePath: state.mm.exePath };
      const recordAt = performance.now();
      await writeRecord(this.imagesDir, id, { state: 'starting', pid: 0, reason: '', ...facts });
      at.failure = 'restore_failed';
      const startAt = performance.now();
      log.debug(`session ${id}: record and manifest read ${(recordAt - readAt).toFixed(1)} ms, starting recorded ${(startAt - recordAt).toFixed(1)} ms`);
      let pid: number;
      const built = this.prebuilt.take(id);
      try {
        const memory = imageMemory(image, manifest.layout, state);
        const opts = { stdio: this.policy.stdio };
        const restored = built ? await finishBuiltProcess(built, state, memory, opts) : await restoreProcess(state, memory, opts);
        for (const w of restored.warnings) log.warn(`session ${id}: ${w}`);
        log.debug(`session ${id}: ${restored.steps.map((x) => `${x.step} ${x.ms.toFixed(1)}`).join(', ')} ms`);
        pid = restored.pid;
      } catch (err) {
        const reason = (err as Error).message;
        await writeRecord(this.imagesDir, id, { state: 'rolled-back', pid: 0, reason, ...facts });
        log.warn(`session ${id}: handover rolled back: ${reason}`);
        return refused(reason);
      }
      const restoreSeconds = (performance.now() - startAt) / 1000;
      const how = built ? 'built during pre-copy' : 'restored in full';
      log.info(`session ${id}: handed over, pid ${pid} runs here (${how}, ${(restoreSeconds * 1000).toFixed(0)} ms)`);
      const result = { ok: true, pid, restoreSeconds, message: '', prebuilt: built !== undefined };
      // The sender learns it before `running` is durable: until it is, the record says `starting`,
      // which a Resolve answers "ask again" to while this start lasts, and which a restarted
      // receiver decides from facts (this process alive, untraced, the image's program: running).
      // An fsync less in the downtime (docs/design.md, Handover).
      await answer(result);
      const answeredAt = performance.now();
      reapWhenDone(pid, id, () => this.events.handedOverProcessEnded());
      try {
        await writeRecord(this.imagesDir, id, { state: 'running', pid, reason: '', ...facts });
        log.debug(`session ${id}: running recorded ${(performance.now() - answeredAt).toFixed(1)} ms`);
      } catch (err) {
        log.error(
          `session ${id}: the process runs, but its record could not be written (${(err as Error).message}); it stays 'starting' until a restart decides it from facts`,
        );
      }
      return result;
    } catch (err) {
      return refused(`session ${id}: ${(err as Error).message}`);
    } finally {
      this.busy.delete(id);
    }
  }

  /**
   * The decision for session `id`, for a sender that lost the link after asking. No record: the
   * ask never arrived, and a `rolled-back` record is written now, so that it can no longer start
   * the process if it still arrives (the sender resumes the source on this answer).
   */
  async resolve(id: string): Promise<HandoverRecord> {
    if (this.busy.has(id)) return { state: 'starting', pid: 0, reason: 'the start is in progress' };
    this.busy.add(id);
    try {
      const r = await readRecord(this.imagesDir, id);
      if (r) return r.state === 'starting' ? await this.settle(id, r) : { state: r.state, pid: r.pid, reason: r.reason };
      if (!fs.existsSync(`${this.imagesDir}/${id}`)) return { state: 'rolled-back', pid: 0, reason: `no session ${id} here` };
      const reason = 'the handover was never asked for on this receiver (resolved by the sender)';
      await writeRecord(this.imagesDir, id, { state: 'rolled-back', pid: 0, reason, expectedPid: 0, exePath: '' });
      this.events.handoverRolledBack('never_asked');
      return { state: 'rolled-back', pid: 0, reason };
    } finally {
      this.busy.delete(id);
    }
  }

  /** Whether a handover of session `id` was ever asked for here (a decision record exists, or a
   *  start is in progress): then its committed image must not be reopened. */
  async asked(id: string): Promise<boolean> {
    return this.busy.has(id) || (await readRecord(this.imagesDir, id).catch(() => null)) !== null;
  }

  /** At start-up: every `starting` record an earlier run left is decided from facts. */
  async recover(ids: string[]): Promise<void> {
    for (const id of ids) {
      const r = await readRecord(this.imagesDir, id).catch(() => null);
      if (r?.state === 'starting') await this.settle(id, r);
    }
  }

  /** A `starting` record with no start in progress in this process: the run that wrote it died.
   *  Its half-made process died with it (the restorer holds it with PTRACE_O_EXITKILL); a process
   *  that was let go runs on. So: the image's pid alive, not traced, running the image's program
   *  -> running; anything else -> rolled back. */
  private async settle(id: string, r: StoredRecord): Promise<HandoverRecord> {
    const live = await liveImageProcess(r.expectedPid, r.exePath);
    const next: HandoverRecord = live
      ? { state: 'running', pid: r.expectedPid, reason: 'decided after a receiver restart: the process runs' }
      : { state: 'rolled-back', pid: 0, reason: 'the receiver stopped during the start and no process was left running' };
    await writeRecord(this.imagesDir, id, { ...r, ...next });
    // A `running` decision is not counted as a success: this run did not start the process, and
    // it is not this run's child to reap (the processes gauge would never go down).
    if (!live) this.events.handoverRolledBack('receiver_restart');
    log.warn(`session ${id}: handover left starting by an earlier run: ${next.state} (${next.reason})`);
    return next;
  }
}

function refused(message: string): HandoverResult {
  return { ok: false, pid: 0, restoreSeconds: 0, message, prebuilt: false };
}
