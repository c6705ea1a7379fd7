-- wrk script: POST crm.item.update as JSON, a different title and item each time,
-- so every request really changes and saves an item.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local counter = 0

request = function()
  counter = counter + 1
  local id = (counter % 10) + 1
  local body = string.format(
    '{"entityTypeId":2,"id":%d,"fields":{"title":"bench %d","opportunity":%d,' ..
    '"opened":"Y","observers":[1,2],"ufCrm_1721244707107":%d.5}}',
    id, counter, counter, counter)
  return wrk.format(nil, wrk.path, nil, body)
end
