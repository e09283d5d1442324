// Per-module logging with a fixed prefix, in the manner of CRIU's pr_info with LOG_PREFIX.
// Levels: error, warn, info, debug. PRECOPY_LOG=debug|info|warn|error|silent sets the threshold;
// everything goes to stderr so that stdout stays free for results (tables, --json).

const LEVELS = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 } as const;
type Level = Exclude<keyof typeof LEVELS, 'silent'>;

function threshold(): number {
  const v = (process.env.PRECOPY_LOG ?? 'info').toLowerCase();
  return v in LEVELS ? LEVELS[v as keyof typeof LEVELS] : LEVELS.info;
}

// Read once, at the first import: set PRECOPY_LOG before starting the process.
const limit = threshold();

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
  enabled(level: Level): boolean;
}

/** A logger whose lines start with `prefix: ` (e.g. "scan", "store", "server"). */
export function logger(prefix: string): Logger {
  const emit = (level: Level, msg: string) => {
    if (LEVELS[level] > limit) return;
    const tag = level === 'info' ? '' : `${level}: `;
    process.stderr.write(`${prefix}: ${tag}${msg}\n`);
  };
  return {
    error: (m) => emit('error', m),
    warn: (m) => emit('warn', m),
    info: (m) => emit('info', m),
    debug: (m) => emit('debug', m),
    enabled: (level) => LEVELS[level] <= limit,
  };
}
