// pm2 process file: `cargo build --release && pm2 start ecosystem.config.js`.
// pm2 stops with SIGINT by default; barkeep handles SIGINT and SIGTERM alike, flushing SQLite
// before it exits. kill_timeout leaves time for that flush before pm2 sends SIGKILL.
module.exports = {
  apps: [
    {
      name: "barkeep",
      script: "./target/release/barkeep",
      args: "run",
      interpreter: "none",
      cwd: __dirname,
      autorestart: true,
      // Exit code 2 is a configuration error and 3 an unusable database: restarting would loop
      // on the same mistake.
      stop_exit_codes: [0, 2, 3],
      restart_delay: 2000,
      exp_backoff_restart_delay: 200,
      max_restarts: 50,
      kill_timeout: 15000,
      max_memory_restart: "1G",
      env: {
        RUST_LOG: "info",
        LOG_FORMAT: "json",
        // Everything else comes from .env in cwd (see .env.example).
      },
    },
  ],
};
