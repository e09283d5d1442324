// The receiver's durable image store: one directory per session under DIR (see on-disk.ts for the
// format). This module owns the directory level: creating sessions atomically, resuming and
// opening them, listing, and removing old failed/aborted ones. Everything it touches is
// DIR/<valid id> or its own DIR/.tmp-* and DIR/.trash-* names: no path built from input can
// leave DIR.

import { mkdirSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { tuneGcForPageBuffers } from '../common/gc-tuning';
import { logger } from '../common/log';
import { fsyncDir, readJson, writeFileSynced } from './durable-file';
import { checkCount, checkPageSize, checkSessionId, checkText, validSessionId } from './input-checks';
import { FORMAT, sessionFiles, type StateFile } from './on-disk';
import { SessionReader } from './session-reader';
import { SessionWriter } from './session-writer';
import { acquireSession, liveOwner, releaseSession } from './session-lock';
import { StoreError, invalid, ioError } from './store-error';
import { SESSION_STATES, type SessionMeta, type SessionState, type SessionSummary } from './store-types';

export { StoreError, type StoreErrorCode } from './store-error';
export { SessionReader } from './session-reader';
export { SessionWriter } from './session-writer';
export { storeCounters } from './store-counters';
export * from './store-types';

const log = logger('store');

export class ImageStore {
  readonly dir: string;

  constructor(dir: string) {
    tuneGcForPageBuffers(); // page data flows through this process in bulk (common/gc-tuning.ts)
    this.dir = path.resolve(dir);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  static validSessionId(id: string): boolean {
    return validSessionId(id);
  }

  /** A new session; EXISTS if the id is taken. The returned writer owns the session. */
  async create(meta: SessionMeta): Promise<SessionWriter> {
    const m = checkMeta(meta);
    const final = path.join(this.dir, m.sessionId);
    // Built under a temporary name and renamed into place, so a session directory is either
    // absent or complete (meta.json and state.json present), whatever the moment of a crash.
    const tmp = path.join(this.dir, `.tmp-${m.sessionId}-${randomBytes(4).toString('hex')}`);
    const files = sessionFiles(tmp);
    try {
      if (await exists(final)) throw new StoreError('EXISTS', `session ${m.sessionId} already exists`);
      await fsp.mkdir(tmp, { mode: 0o700 });
      await fsp.mkdir(files.chunks);
      await fsp.mkdir(files.bitmaps);
      const st: StateFile = {
        format: FORMAT,
        state: 'receiving',
        lastDurableRound: -1,
        updatedAt: new Date().toISOString(),
        gen: 0,
        commit: 0,
        layout: [],
        windows: [],
        imagePages: 0,
        dataPages: 0,
        rounds: [],
      };
      await writeFileSynced(files.meta, JSON.stringify(m, null, 1));
      await writeFileSynced(files.state, JSON.stringify(st));
      await Promise.all([fsyncDir(files.chunks), fsyncDir(files.bitmaps), fsyncDir(tmp)]);
      try {
        await fsp.rename(tmp, final);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new StoreError('EXISTS', `session ${m.sessionId} already exists`);
        throw err;
      }
      await fsyncDir(this.dir);
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true }).catch(() => undefined);
      throw ioError(err, `create session ${m.sessionId}`);
    }
    const img = await this.take(m.sessionId, final);
    log.info(`session ${m.sessionId} created (pid ${m.pid} from ${m.sourceHost || 'unknown host'})`);
    return img;
  }

  /** Reopen a receiving session at its last durable round, owning it; with `reopenCommitted`, a
   *  committed one too (its next round makes it receiving again, as a verify fix-up does). */
  async resume(id: string, opts: { reopenCommitted?: boolean } = {}): Promise<SessionWriter> {
    const dir = await this.sessionDir(id);
    const img = await this.take(id, dir);
    const ok = img.state === 'receiving' || (img.state === 'committed' && opts.reopenCommitted === true);
    if (!ok) {
      await img.close();
      throw new StoreError('BAD_STATE', `session ${id} is ${img.state}; only a receiving session can be resumed`);
    }
    await img.tidyAfterCrash();
    log.info(`session ${id} resumed at durable round ${img.lastDurableRound}`);
    return img;
  }

  /**
   * Open a session in any state, read-only (list, verify, export, report); takes no lock. A
   * session whose state names a final-round journal and that no live process holds (its writer
   * crashed, perhaps with the machine) is first taken and closed: opening it as a writer replays
   * the journal into the chunk files (page-journal.ts). A live writer wrote those pages in place
   * before making the journal durable, so they read back through the page cache meanwhile.
   */
  async open(id: string): Promise<SessionReader> {
    const dir = await this.sessionDir(id);
    const files = sessionFiles(dir);
    const st = await readJson<StateFile>(files.state).catch(() => undefined);
    if (st?.journal && (await liveOwner(dir)) === undefined) {
      const w = await this.take(id, dir).catch((err: unknown) => {
        // Taken meanwhile by a writer, which replays it itself.
        if (err instanceof StoreError && err.code === 'BAD_STATE') return null;
        throw err;
      });
      await w?.close();
    }
    return SessionReader.load(files, id);
  }

  /** Every session, oldest first. Unreadable directories are skipped with a warning. */
  async list(): Promise<SessionSummary[]> {
    const out: SessionSummary[] = [];
    for (const ent of await fsp.readdir(this.dir, { withFileTypes: true })) {
      if (!ent.isDirectory() || !validSessionId(ent.name)) continue;
      try {
        out.push(await this.summary(ent.name));
      } catch (err) {
        log.warn(`skipping ${path.join(this.dir, ent.name)}: ${(err as Error).message}`);
      }
    }
    return out.sort((a, b) => a.meta.createdAt.localeCompare(b.meta.createdAt) || a.meta.sessionId.localeCompare(b.meta.sessionId));
  }

  /**
   * Remove sessions in the given states (default failed and aborted) not updated for olderThanMs,
   * skipping any a live process holds; also leftovers of interrupted creations and removals.
   * Committed sessions go only when 'committed' is named explicitly. Returns the removed ids
   * (with dryRun: the ids that would be removed, removing nothing).
   */
  async gc(opts: { olderThanMs: number; states?: SessionState[]; dryRun?: boolean }): Promise<string[]> {
    const olderThanMs = checkCount(opts.olderThanMs, 'olderThanMs');
    const states = opts.states ?? ['failed', 'aborted'];
    for (const s of states) if (!SESSION_STATES.includes(s)) throw invalid(`unknown session state '${String(s)}'`);
    const cutoff = Date.now() - olderThanMs;
    const removed: string[] = [];
    for (const s of await this.list()) {
      const id = s.meta.sessionId;
      if (!states.includes(s.state) || Date.parse(s.updatedAt) > cutoff) continue;
      const dir = path.join(this.dir, id);
      if ((await liveOwner(dir)) !== undefined) {
        log.info(`gc: session ${id} is in use, kept`);
        continue;
      }
      if (opts.dryRun) {
        removed.push(id);
        continue;
      }
      // Renamed away first: the session vanishes at once even if the removal is interrupted.
      const trash = path.join(this.dir, `.trash-${id}-${randomBytes(4).toString('hex')}`);
      await fsp.rename(dir, trash);
      await fsyncDir(this.dir);
      await fsp.rm(trash, { recursive: true, force: true });
      removed.push(id);
      log.info(`gc: removed session ${id} (${s.state} since ${s.updatedAt})`);
    }
    if (opts.dryRun) return removed;
    for (const ent of await fsp.readdir(this.dir, { withFileTypes: true })) {
      if (!ent.isDirectory() || !/^\.(tmp|trash)-/.test(ent.name)) continue;
      const p = path.join(this.dir, ent.name);
      const st = await fsp.lstat(p).catch(() => undefined);
      if (st && st.mtimeMs <= cutoff) await fsp.rm(p, { recursive: true, force: true });
    }
    return removed;
  }

  // ---- internals ----

  private async summary(id: string): Promise<SessionSummary> {
    const files = sessionFiles(path.join(this.dir, id));
    const meta = await readJson<SessionMeta>(files.meta);
    const st = await readJson<StateFile>(files.state);
    if (!meta || !st) throw new Error('not a complete session directory');
    return {
      meta,
      state: st.state,
      rounds: st.rounds.length,
      imagePages: st.imagePages,
      imageBytes: st.imagePages * meta.pageSize,
      updatedAt: st.updatedAt,
      reason: st.reason,
    };
  }

  /** DIR/<id> after checking the id and that it is a real directory (not a planted symlink). */
  private async sessionDir(id: string): Promise<string> {
    checkSessionId(id);
    const dir = path.join(this.dir, id);
    let st;
    try {
      st = await fsp.lstat(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreError('NOT_FOUND', `no session ${id} in ${this.dir}`);
      throw ioError(err, `session ${id}`);
    }
    if (!st.isDirectory()) throw new StoreError('NOT_FOUND', `${dir} is not a session directory`);
    // A directory someone else put here is not ours to lock (a writer's owner.lock goes in it).
    if (!(await exists(sessionFiles(dir).meta))) throw new StoreError('NOT_FOUND', `session ${id} not found (no meta.json)`);
    return dir;
  }

  private async take(id: string, dir: string): Promise<SessionWriter> {
    try {
      await acquireSession(dir, id);
    } catch (err) {
      throw ioError(err, `session ${id}`);
    }
    try {
      return await SessionWriter.load(sessionFiles(dir), id);
    } catch (err) {
      await releaseSession(dir);
      throw err;
    }
  }
}

async function exists(p: string): Promise<boolean> {
  return fsp.lstat(p).then(
    () => true,
    () => false,
  );
}

function checkMeta(meta: SessionMeta): SessionMeta {
  if (typeof meta !== 'object' || meta === null) throw invalid('session metadata missing');
  const createdAt = checkText(meta.createdAt, 'createdAt', 64);
  if (Number.isNaN(Date.parse(createdAt))) throw invalid(`createdAt '${createdAt}' is not an ISO date`);
  return {
    sessionId: checkSessionId(meta.sessionId),
    sourceHost: checkText(meta.sourceHost, 'source host', 256),
    pid: checkCount(meta.pid, 'pid'),
    pageSize: checkPageSize(meta.pageSize),
    kernel: checkText(meta.kernel, 'kernel', 256),
    command: checkText(meta.command, 'command', 256),
    memoryBytes: checkCount(meta.memoryBytes, 'memory bytes'),
    createdAt,
    ...(Number.isFinite(meta.downtimeTargetSeconds) && (meta.downtimeTargetSeconds as number) > 0 ? { downtimeTargetSeconds: meta.downtimeTargetSeconds } : {}),
  };
}
