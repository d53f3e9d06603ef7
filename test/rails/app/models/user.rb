class User < ApplicationRecord
  devise :database_authenticatable, :registerable
end
