-- Digest of every key of the Redis databases named in ARGV (numbers), read inside one script so
-- nothing changes meanwhile: per key its name, type and value (sets and hashes sorted, so the digest
-- does not depend on Redis's internal order; lists, sorted sets and streams in their own order) and
-- whether it has a TTL. Keys that expire before ARGV[1] (Unix time in milliseconds; 0: five minutes
-- from now) are counted apart and left out: they may be gone by the time the other side is read.
-- Both sides of a comparison pass the same cutoff: expiry times are absolute, in a snapshot too.
-- The same on Redis 6, 7 and 8.
-- Returns "cutoff<TAB>ms", then one line per database: "db<TAB>keys<TAB>short_lived<TAB>sha1".
-- Used by redis-digest.sh.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local cutoff = tonumber(ARGV[1])
if cutoff == 0 then cutoff = now + 300000 end
local horizon = cutoff - now
local function field(value)
  value = tostring(value)
  return #value .. ':' .. value
end
local function join(items)
  local out = {}
  for i, item in ipairs(items) do out[i] = field(item) end
  return table.concat(out)
end
local function pairs_sorted(flat)
  local rows = {}
  for i = 1, #flat, 2 do rows[#rows + 1] = field(flat[i]) .. field(flat[i + 1]) end
  table.sort(rows)
  return table.concat(rows)
end
local lines = {'cutoff\t' .. string.format('%d', cutoff)}
for i = 2, #ARGV do
  local db = ARGV[i]
  redis.call('SELECT', db)
  local keys = redis.call('KEYS', '*')
  table.sort(keys)
  local digests, short = {}, 0
  for _, key in ipairs(keys) do
    local ttl = redis.call('PTTL', key)
    if ttl >= 0 and ttl < horizon then
      short = short + 1
    elseif ttl ~= -2 then
      local kind = redis.call('TYPE', key)['ok']
      local value
      if kind == 'string' then
        value = field(redis.call('GET', key))
      elseif kind == 'list' then
        value = join(redis.call('LRANGE', key, 0, -1))
      elseif kind == 'set' then
        local members = redis.call('SMEMBERS', key)
        table.sort(members)
        value = join(members)
      elseif kind == 'zset' then
        value = join(redis.call('ZRANGE', key, 0, -1, 'WITHSCORES'))
      elseif kind == 'hash' then
        value = pairs_sorted(redis.call('HGETALL', key))
      elseif kind == 'stream' then
        local parts = {}
        for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
          parts[#parts + 1] = field(entry[1]) .. join(entry[2])
        end
        value = table.concat(parts)
      else
        value = ''  -- a module's type: its name only
      end
      digests[#digests + 1] = redis.sha1hex(field(key) .. field(kind) .. (ttl >= 0 and 'ttl' or 'persist') .. value)
    end
  end
  lines[#lines + 1] = db .. '\t' .. #digests .. '\t' .. short .. '\t' .. redis.sha1hex(table.concat(digests))
end
return lines
