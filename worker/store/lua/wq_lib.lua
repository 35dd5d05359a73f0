-- The pacing rule of worker/core/pacing.py, prepended to each wq_*.lua program (worker/store/writequeue.py).
-- A pace hash: n (next_at), p (paused_until), r (reported limit per minute), ru (reported_until).
local function fmt(x) return string.format('%.17g', x) end
local function pace_read(key)
  local v = redis.call('HMGET', key, 'n', 'p', 'r', 'ru')
  return {n = tonumber(v[1]) or 0, p = tonumber(v[2]) or 0, r = tonumber(v[3]), ru = tonumber(v[4]) or 0}
end
local function pace_interval(count, period, pace, now)
  local spacing = period / count
  if pace.r and pace.r > 0 and now < pace.ru then spacing = math.max(spacing, 60.0 / pace.r) end
  return spacing
end
local function pace_wait(pace, now) return math.max(pace.n - now, pace.p - now, 0) end
local PACE_KEEP_MS = 3600000 -- a pause or a reported limit outlives no hour of silence
local function pace_admit(key, pace, count, period, now)
  local w = pace_wait(pace, now)
  if w > 0 then return w end
  pace.n = math.max(pace.n, now) + pace_interval(count, period, pace, now)
  redis.call('HSET', key, 'n', fmt(pace.n))
  redis.call('PEXPIRE', key, PACE_KEEP_MS)
  return 0
end
