class PageView < ApplicationRecord
end
