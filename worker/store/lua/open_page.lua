-- A page of the re-check round, in the server so a crowded bucket is not shipped whole:
-- buckets from the cursor's on, members sorted, after the cursor's member in its bucket.
-- KEYS: the bucket index. ARGV: the cursor bucket's start (or -inf), bucket key prefix,
-- cursor bucket, cursor member, count.
local count, page = tonumber(ARGV[5]), {}
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local members = redis.call('SMEMBERS', ARGV[2] .. bucket)
  table.sort(members)
  for _, member in ipairs(members) do
    if bucket ~= ARGV[3] or member > ARGV[4] then
      page[#page + 1] = bucket
      page[#page + 1] = member
      if #page >= 2 * count then return page end
    end
  end
end
return page
